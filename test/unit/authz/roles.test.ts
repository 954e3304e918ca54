import t from 'tap'
import { compilePolicies, matchRule, type PolicySet } from '../../../src/authz/policy.ts'
import { shortfall } from '../../../src/authz/requirements.ts'
import { describeSource, expandIdentity, explainIdentity } from '../../../src/authz/roles.ts'
import { PolicyError } from '../../../src/errors.ts'
import type { Identity } from '../../../src/identity.ts'

const load = (files: Record<string, string>, fallback: 'public' | 'authenticated' | 'deny' = 'authenticated'): PolicySet =>
  compilePolicies(Object.entries(files).map(([file, text]) => ({ file, text })), '/policies', fallback)

function problemsOf (files: Record<string, string>): string[] {
  try {
    load(files)
  } catch (err) {
    if (err instanceof PolicyError) return err.problems.map((p) => `${p.path}: ${p.expected} / ${p.received}`)
    throw err
  }
  throw new Error('expected a PolicyError')
}

const person = (parts: Partial<Identity> = {}): Identity => ({
  user: 'u-1', preferredUsername: 'pat', email: null, groups: [], roles: [], authMode: 'token', accessToken: null, expiresAt: null, ...parts
})

const HIERARCHY = {
  'roles.yaml': `roles:
  viewer:
    permissions: [reports:read]
  editor:
    permissions: [reports:write]
    inherits: [viewer]
  manager:
    permissions: [budget:approve]
    inherits: [editor]
  director:
    inherits: [manager, auditor]
  auditor:
    permissions: [audit:read, reports:read]
`
}

t.test('inheritance: a senior role gets every junior\'s permissions through several levels', async (t) => {
  const policy = load(HIERARCHY)
  const { identity, access } = expandIdentity(person({ roles: ['director'] }), policy.roles)
  t.same(identity.roles, ['director', 'manager', 'auditor', 'editor', 'viewer'], 'nearest juniors first')
  t.same([...access.permissions].sort(), ['audit:read', 'budget:approve', 'reports:read', 'reports:write'])
  t.same(identity.permissions, [...access.permissions])
  const viewer = expandIdentity(person({ roles: ['viewer'] }), policy.roles)
  t.same(viewer.identity.roles, ['viewer'], 'inheritance runs from senior to junior only')
  t.same(viewer.identity.permissions, ['reports:read'])
  const stranger = expandIdentity(person({ roles: ['offline_access'] }), policy.roles)
  t.same(stranger.identity.roles, ['offline_access'], 'a role no file defines is kept, with no permissions')
  t.same(stranger.identity.permissions, [])
  t.ok(Object.isFrozen(identity) && Object.isFrozen(identity.roles), 'shared, so frozen')
})

t.test('a cycle is rejected with its members named, each cycle once', async (t) => {
  t.same(problemsOf({
    'a.yaml': 'roles:\n  a:\n    inherits: [b]\n  b:\n    inherits: [c]\n',
    'b.yaml': 'roles:\n  c:\n    inherits: [a]\n  self:\n    inherits: [self]\n  ok:\n    inherits: [a]\n'
  }), [
    'a.yaml (line 2): roles.a.inherits: no inheritance cycle (a role cannot inherit itself, directly or through others) / the cycle a → b → c → a',
    'b.yaml (line 4): roles.self.inherits: no inheritance cycle (a role cannot inherit itself, directly or through others) / the cycle self → self'
  ])
})

t.test('a diamond is not a cycle; an undefined junior and a role defined twice are errors', async (t) => {
  const diamond = load({ 'a.yaml': 'roles:\n  top: { inherits: [left, right] }\n  left: { inherits: [base] }\n  right: { inherits: [base] }\n  base: { permissions: [p] }\n' })
  t.same(expandIdentity(person({ roles: ['top'] }), diamond.roles).identity.roles, ['top', 'left', 'right', 'base'])
  t.same(problemsOf({
    'a.yaml': 'roles:\n  admin:\n    inherits: [editr]\n',
    'b.yaml': '# comment\nroles:\n  admin:\n    permissions: [x]\n'
  }), [
    'b.yaml (line 3): roles.admin: a role defined once across all policy files / also defined at a.yaml (line 2): roles.admin',
    'a.yaml (line 2): roles.admin.inherits[0]: a role defined under roles: in some policy file / "editr"'
  ])
})

t.test('a file that cannot be read is reported alone, not as undefined juniors of other files', async (t) => {
  const broken = { 'a.yaml': 'roles:\n  editor: { permissions: [x]\n' }
  const alone = problemsOf(broken)
  t.ok(alone.length > 0 && alone.every((p) => p.startsWith('a.yaml')))
  t.same(problemsOf({ ...broken, 'b.yaml': 'roles:\n  admin:\n    inherits: [editor]\n' }), alone, 'the editor b.yaml inherits may be the one a.yaml defines')
  t.same(problemsOf({ 'b.yaml': 'roles:\n  admin:\n    inherits: [editor]\n' }), ['b.yaml (line 2): roles.admin.inherits[0]: a role defined under roles: in some policy file / "editor"'], 'with every file read it is an error')
})

const MAPPINGS = {
  'roles.yaml': 'roles:\n  admin: { permissions: [users:write], inherits: [viewer] }\n  viewer: { permissions: [reports:read] }\n  editor: { permissions: [catalogue:write] }\n',
  'maps.yaml': `group_roles:
  /platform/admins: [admin]
  admins: [viewer]
client_roles:
  app:operator: [editor]
realm_roles:
  offline_access: []
  legacy-admin: [admin]
`
}

t.test('groups, client roles and realm roles map to roles; mappings apply once, then inheritance', async (t) => {
  const { roles } = load(MAPPINGS)
  const grouped = expandIdentity(person({ groups: ['/platform/admins'] }), roles)
  t.same(grouped.identity.roles, ['admin', 'viewer'])
  t.same(grouped.identity.permissions, ['users:write', 'reports:read'])
  t.same(expandIdentity(person({ groups: ['/customers/acme/admins'] }), roles).identity.roles, [], 'a bare key never matches the last segment of a path')
  t.same(expandIdentity(person({ groups: ['admins'] }), roles).identity.roles, ['viewer'], 'a bare key matches a bare group')
  t.same(expandIdentity(person({ groups: ['/Platform/Admins'] }), roles).identity.roles, [], 'group names are case-sensitive')
  const client = expandIdentity(person({ roles: ['app:operator', 'other:operator'] }), roles)
  t.same(client.identity.roles, ['editor', 'other:operator'], 'a mapped client role stands for its roles; an unmapped one keeps its name')
  const realm = expandIdentity(person({ roles: ['offline_access', 'legacy-admin', 'user'] }), roles)
  t.same(realm.identity.roles, ['admin', 'viewer', 'user'], 'mapped to nothing, a realm role is dropped')
})

t.test('mapping keys: client roles spelt client:role, each key mapped once across files', async (t) => {
  t.same(problemsOf({
    'a.yaml': 'client_roles:\n  operator: [x]\ngroup_roles:\n  /g: [x]\n',
    'b.yaml': 'group_roles:\n  /g: [y]\n  "a,b": [z]\n'
  }), [
    'a.yaml (line 2): client_roles.operator: a client role as client:role / "operator"',
    'b.yaml (line 2): group_roles["/g"]: "/g" mapped once across all policy files / also mapped at a.yaml (line 4): group_roles["/g"]',
    'b.yaml (line 3): group_roles["a,b"]: a name without commas or control characters / "a,b"'
  ])
})

t.test('every requirement kind, and what the access line says is missing', async (t) => {
  const policy = load({
    ...MAPPINGS,
    'rules.yaml': `rules:
  - { name: any, path: /any, any_roles: [admin, editor] }
  - { name: old, path: /old, roles: [admin] }
  - { name: all, path: /all, all_roles: [admin, editor] }
  - { name: perms, path: /perms, permissions: [users:write, reports:read] }
  - { name: groups, path: /groups, groups: [/platform/admins, /platform/billing] }
  - { name: mail, path: /mail, emails: [Boss@Example.COM], email_domains: [partner.example] }
  - { name: many, path: /many, permissions: [reports:read], groups: [/staff] }
`
  })
  const ask = (path: string, who: Partial<Identity>): string | null => {
    const rule = matchRule(policy, 'GET', path)
    const missing = shortfall(rule.requirement, expandIdentity(person(who), policy.roles).access)
    return missing === null ? null : `${missing.reason}: ${missing.missing}`
  }
  t.equal(ask('/any', { roles: ['app:operator'] }), null, 'editor through a client role mapping')
  t.equal(ask('/any', { roles: ['user'] }), 'missing_role: any of roles admin, editor')
  t.equal(ask('/old', { groups: ['/platform/admins'] }), null, 'roles: is any_roles')
  t.equal(ask('/all', { groups: ['/platform/admins'] }), 'missing_role: roles editor (all of admin, editor)')
  t.equal(ask('/all', { groups: ['/platform/admins'], roles: ['app:operator'] }), null)
  t.equal(ask('/perms', { roles: ['viewer'] }), 'missing_permission: permissions users:write')
  t.equal(ask('/perms', { roles: ['admin'] }), null, 'reports:read inherited from viewer')
  t.equal(ask('/groups', { groups: ['/platform/billing'] }), null)
  t.equal(ask('/groups', { groups: ['/platform'] }), 'missing_group: any of groups /platform/admins, /platform/billing')
  t.equal(ask('/mail', { email: 'boss@example.com', emailVerified: true }), null, 'addresses compare case-insensitively')
  t.equal(ask('/mail', { email: 'pat@PARTNER.example', emailVerified: true }), null, 'a domain of email_domains')
  t.equal(ask('/mail', { email: 'pat@sub.partner.example', emailVerified: true }), 'email_not_allowed: an e-mail address in boss@example.com, @partner.example', 'no subdomains')
  t.equal(ask('/mail', { email: 'boss@example.com', emailVerified: false }), 'email_not_allowed: a verified e-mail address in boss@example.com, @partner.example', 'only a verified address counts')
  t.equal(ask('/mail', { email: 'boss@example.com' }), 'email_not_allowed: a verified e-mail address in boss@example.com, @partner.example', 'absent is not verified')
  t.equal(ask('/mail', { email: 'partner.example', emailVerified: true }), 'email_not_allowed: a verified e-mail address in boss@example.com, @partner.example', 'not an address')
  t.equal(ask('/many', { roles: ['viewer'] }), 'missing_group: any of groups /staff', 'several keys: all must hold')
  t.equal(ask('/many', { roles: ['viewer'], groups: ['/staff'] }), null)
})

t.test('a rule has allow or requirements, path or paths; roles and any_roles are one key', async (t) => {
  t.same(problemsOf({
    'a.yaml': 'rules:\n  - { path: /a, paths: [/b], allow: public }\n  - { path: /c, roles: [a], any_roles: [b] }\n  - { allow: public }\n  - { path: /d, allow: deny, permissions: [p] }\n  - { path: "/e/:1d", allow: deny }\n'
  }), [
    'a.yaml (line 2): rules[0]: exactly one of path or paths / both',
    'a.yaml (line 3): rules[1]: one of roles or any_roles (they mean the same) / both',
    'a.yaml (line 4): rules[2]: exactly one of path or paths / neither',
    'a.yaml (line 5): rules[3]: exactly one of allow (public, authenticated, deny) or requirements (roles, any_roles, all_roles, permissions, groups, emails, email_domains) / both (allow and permissions)',
    'a.yaml (line 6): rules[4].path: a parameter segment named with letters, digits and _ (:id) / "/e/:1d"'
  ])
})

t.test('a permission no role grants is a warning: the rule allows nobody', async (t) => {
  const policy = load({ ...MAPPINGS, 'rules.yaml': 'rules:\n  - { name: typo, path: /x, permissions: [users:wirte] }\n  - { name: fine, path: /y, permissions: [reports:read] }\n' })
  t.same(policy.warnings, ['typo: no role grants permission users:wirte, so this rule allows nobody'])
})

t.test('precedence is first match, also where a later rule is more specific, and with case folding', async (t) => {
  const policy = load({
    'a.yaml': `rules:
  - { name: broad, path: /reports/**, any_roles: [staff] }
  - { name: specific, path: /reports/annual, permissions: [reports:annual] }
  - { name: public exception, path: /docs/public, allow: public }
  - { name: docs, path: /docs/**, any_roles: [reader] }
`,
    'b.yaml': 'rules:\n  - { name: later file, path: /reports/annual, allow: deny }\n'
  })
  t.equal(matchRule(policy, 'GET', '/reports/annual').name, 'broad', 'the earlier, broader rule wins over a more specific later one')
  t.equal(matchRule(policy, 'GET', '/Reports/annual').name, 'default (authenticated) + broad (other case) + specific (other case) + later file (other case)',
    'another spelling must satisfy every restricting rule that covers some spelling of it')
  t.same(matchRule(policy, 'GET', '/Reports/annual').requirement, { kind: 'deny' })
  t.equal(matchRule(policy, 'GET', '/docs/public').name, 'public exception', 'an exception before its rule')
  t.same(matchRule(policy, 'GET', '/docs/PUBLIC').requirement, { kind: 'conditions', clauses: [{ kind: 'any_role', roles: ['reader'] }] }, 'a public rule exempts only its exact spelling')
})

t.test('explanations name where every role and permission came from', async (t) => {
  const policy = load({ ...HIERARCHY, 'maps.yaml': 'group_roles:\n  /platform/admins: [manager]\nclient_roles:\n  app:ops: [auditor]\nrealm_roles:\n  boss: [director]\n' })
  const { roles, permissions } = explainIdentity(person({ roles: ['viewer', 'app:ops', 'boss'], groups: ['/platform/admins'] }), policy.roles, () => ({ from: 'token_claim', claim: 'realm_access.roles' }))
  const words = (grants: typeof roles): Record<string, string[]> => Object.fromEntries(grants.map((g) => [g.name, g.sources.map(describeSource)]))
  t.same(words(roles), {
    viewer: ['token claim realm_access.roles', 'inherited from editor'],
    auditor: ['client role app:ops (client_roles)', 'inherited from director'],
    director: ['realm role boss (realm_roles)'],
    manager: ['group /platform/admins (group_roles)', 'inherited from director'],
    editor: ['inherited from manager']
  })
  t.same(words(permissions), {
    'reports:read': ['role viewer', 'role auditor'],
    'audit:read': ['role auditor'],
    'budget:approve': ['role manager'],
    'reports:write': ['role editor']
  })
  t.same(new Set(roles.map((r) => r.name)), new Set(expandIdentity(person({ roles: ['viewer', 'app:ops', 'boss'], groups: ['/platform/admins'] }), policy.roles).identity.roles), 'the same roles as the expansion decide() uses')
})

t.test('today\'s first-cut files expand nothing: roles pass through as they are', async (t) => {
  const policy = load({ 'app.yaml': 'rules:\n  - paths: [/admin/**]\n    roles: [admin]\n' })
  t.equal(policy.roles.trivial, true)
  const raw = person({ roles: ['admin', 'app:x'], groups: ['/g'] })
  const { identity } = expandIdentity(raw, policy.roles)
  t.same(identity.roles, ['admin', 'app:x'])
  t.same(identity.permissions, [])
})
