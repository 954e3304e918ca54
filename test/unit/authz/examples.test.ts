import t from 'tap'
import { fileURLToPath } from 'node:url'
import { loadPolicies, matchRule } from '../../../src/authz/policy.ts'
import { shortfall } from '../../../src/authz/requirements.ts'
import { expandIdentity } from '../../../src/authz/roles.ts'
import type { Identity } from '../../../src/identity.ts'

// The policy files the repository ships must load, and mean what their comments say.

const dir = (path: string): string => fileURLToPath(new URL(`../../../${path}`, import.meta.url))

t.test('policies/app.yaml, the first-cut set, loads unchanged and expands nothing', async (t) => {
  const policy = loadPolicies(dir('policies'), 'authenticated')
  t.same(policy.files, ['app.yaml'], 'README.md and examples/ are not policy files')
  t.equal(policy.rules.length, 4)
  t.same(policy.warnings, [])
  t.equal(policy.roles.trivial, true)
})

t.test('policies/examples/rbac uses every feature and decides as its comments say', async (t) => {
  const policy = loadPolicies(dir('policies/examples/rbac'), 'authenticated')
  t.same(policy.files, ['00-roles.yaml', '10-mappings.yaml', '20-rules.yaml'])
  t.same(policy.warnings, [])
  const who = (parts: Partial<Identity>): Identity => ({ user: 'u', preferredUsername: null, email: null, groups: [], roles: [], authMode: 'token', accessToken: null, expiresAt: null, ...parts })
  const decide = (identity: Identity, method: string, path: string, host?: string): string => {
    const rule = matchRule(policy, method, path, host)
    if (rule.requirement.kind !== 'conditions') return `${rule.name}: ${rule.requirement.kind}`
    const missing = shortfall(rule.requirement, expandIdentity(identity, policy.roles).access)
    return `${rule.name}: ${missing === null ? 'allow' : missing.missing}`
  }
  const admin = who({ groups: ['/platform/admins'], roles: ['offline_access'] })
  const operator = who({ roles: ['gatehouse:operator'] })
  const staff = who({ groups: ['/staff'] })
  t.same(expandIdentity(admin, policy.roles).identity.roles, ['admin', 'editor', 'billing', 'viewer'], 'offline_access mapped to nothing; inheritance through two levels')
  t.equal(decide(admin, 'GET', '/admin/users/7'), 'user administration: allow')
  t.equal(decide(operator, 'GET', '/admin/users/7'), 'user administration: permissions users:read, users:write')
  t.equal(decide(admin, 'DELETE', '/invoices/9'), 'invoices, changes: allow', 'billing inherited by admin')
  t.equal(decide(staff, 'GET', '/invoices/9'), 'invoices: permissions invoices:read')
  t.equal(decide(operator, 'PUT', '/catalogue/shoes'), 'catalogue edits: allow', 'a client role mapped to editor')
  t.equal(decide(staff, 'PUT', '/catalogue/shoes'), 'catalogue edits: permissions catalogue:write')
  t.equal(decide(who({ roles: ['auditor'], groups: ['/staff'] }), 'GET', '/audit/2026'), 'audit trail, for auditors who are also staff: allow')
  t.equal(decide(who({ roles: ['auditor'] }), 'GET', '/audit/2026'), 'audit trail, for auditors who are also staff: roles viewer (all of auditor, viewer)')
  t.equal(decide(who({ groups: ['/platform/billing'] }), 'GET', '/platform/x'), 'platform team tools: allow')
  const partner = who({ email: 'ann@partner.example', emailVerified: true })
  t.equal(decide(partner, 'GET', '/partners/deals', 'partners.example.com'), 'partner portal: allow')
  t.equal(decide(who({ email: 'liaison@example.com', emailVerified: true }), 'GET', '/partners/x', 'partners.example.com'), 'partner portal: allow')
  t.equal(decide(partner, 'GET', '/partners/deals', 'www.example.com'), 'default (authenticated): authenticated', 'another host: the rule does not apply')
  t.equal(decide(partner, 'GET', '/assets/site.css'), 'public assets: public')
  t.equal(decide(partner, 'GET', '/actuator/env'), 'framework internals are never exposed: deny')
})
