import t from 'tap'
import { Writable } from 'node:stream'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createDecider, type DeciderDeps, type Decision, type RequestFacts, type SessionLookup } from '../../../src/decision/decide.ts'
import { loadPolicies } from '../../../src/authz/policy.ts'
import { DEFAULT_HEADERS } from '../../../src/config/schema.ts'
import { createLogger } from '../../../src/log.ts'
import type { Identity } from '../../../src/identity.ts'
import { KEYCLOAK_CLAIMS } from '../../../src/keycloak/claims.ts'
import type { AccessTokenVerifier, VerifyOutcome } from '../../../src/keycloak/verify-token.ts'

// decide() on its own, without Fastify or sockets (HOUSE-STYLE §6 unit tier). The verifier and
// the session lookup are stand-ins with the two methods decide() calls: what is under test is
// what decide() makes of them, above all when they throw.

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg'
const POLICY = 'rules:\n  - paths: [/public/**]\n    allow: public\n  - paths: [/admin/**]\n    roles: [admin]\n'

/** Two methods of the verifier decide() uses; each test says what they do. */
interface FakeVerifier {
  remembered: (token: string) => VerifyOutcome | null
  verify: (token: string) => Promise<VerifyOutcome>
}

const validToken = (roles: string[]): VerifyOutcome => ({
  ok: true,
  cached: false,
  token: { claims: { iss: 'https://sso.example.test/realms/acme', sub: 'user-1', typ: 'Bearer', exp: 4_000_000_000, preferred_username: 'alice', realm_access: { roles } }, expiresAt: 4_000_000_000_000, kid: 'k1', access: true }
})

function rig (t: { testdir: () => string }, parts: { verifier?: Partial<FakeVerifier>, sessions?: SessionLookup } = {}) {
  const dir = t.testdir()
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'app.yaml'), POLICY)
  const lines: Array<Record<string, unknown>> = []
  const destination = new Writable({ write (chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>); done() } })
  const verifier: FakeVerifier = {
    remembered: () => null,
    verify: async () => validToken(['admin']),
    ...parts.verifier
  }
  const deps: DeciderDeps = {
    policy: { current: loadPolicies(dir, 'authenticated') },
    verifier: verifier as unknown as AccessTokenVerifier,
    headers: { ...DEFAULT_HEADERS, pass_access_token: false, pass_authorization_header: false },
    claims: { mapping: KEYCLOAK_CLAIMS, clientIds: ['app'] },
    prefix: '/_gatehouse',
    log: createLogger({ level: 'debug', destination }),
    ...(parts.sessions !== undefined ? { sessions: parts.sessions } : {})
  }
  return { decide: createDecider(deps), lines }
}

const facts = (target: string, headers: RequestFacts['headers'] = { authorization: `Bearer ${TOKEN}` }): RequestFacts => ({ entry: 'proxy', method: 'GET', target, headers })

const FAIL_CLOSED: Decision = { kind: 'deny', status: 500, reason: 'internal_error', rule: null, identity: null, headers: {}, body: { error: 'internal_error' } }

t.test('with working parts, a token with the role is allowed (the rig itself works)', async (t) => {
  const { decide } = rig(t)
  const decision = await decide(facts('/admin/x'))
  t.equal(decision.kind, 'allow')
  t.equal(decision.reason, 'role_granted')
})

t.test('an unexpected throw anywhere in deciding is a 500 deny, never an allow', async (t) => {
  const boom = (): never => { throw new Error('boom: the disk is on fire') }
  const cases: Array<[string, Parameters<typeof rig>[1], RequestFacts]> = [
    ['the verifier\'s cache lookup throws', { verifier: { remembered: boom } }, facts('/admin/x')],
    ['the verifier rejects', { verifier: { verify: async () => boom() } }, facts('/admin/x')],
    ['the verifier resolves to nothing usable', { verifier: { verify: async () => undefined as unknown as VerifyOutcome } }, facts('/admin/x')],
    ['the verified claims cannot be read', {
      verifier: { verify: async () => ({ ok: true, cached: false, token: { get claims (): never { return boom() }, expiresAt: 4_000_000_000_000, kid: 'k1', access: true } }) }
    }, facts('/admin/x')],
    ['the session lookup rejects', { sessions: { identify: async () => boom() } }, facts('/admin/x', { cookie: 'gatehouse_session=abc' })],
    ['the session lookup throws synchronously', { sessions: { identify: (): Promise<Identity | null> => boom() } }, facts('/elsewhere', { cookie: 'gatehouse_session=abc' })]
  ]
  for (const [label, parts, request] of cases) {
    const { decide, lines } = rig(t, parts)
    const decision = await decide(request)
    t.same(decision, FAIL_CLOSED, label)
    const line = lines.find((l) => l.msg === 'decision failed; denying')
    t.equal(line?.level, 50, `${label}: logged at error`)
    t.equal(line?.entry, 'proxy', `${label}: with the entry point`)
    t.notMatch(JSON.stringify(lines), TOKEN, `${label}: the token is not logged`)
  }
})

t.test('the 500 body is generic: no library message reaches the client', async (t) => {
  const { decide } = rig(t, { verifier: { remembered: () => { throw new Error('SQLITE_CORRUPT: database disk image is malformed') } } })
  const decision = await decide(facts('/admin/x'))
  t.equal(decision.kind, 'deny')
  if (decision.kind === 'deny') t.same(decision.body, { error: 'internal_error' })
})

t.test('a public route needs no authentication, so a broken verifier does not touch it', async (t) => {
  let called = 0
  const { decide } = rig(t, { verifier: { remembered: () => { called++; throw new Error('boom') } } })
  const decision = await decide(facts('/public/logo.png'))
  t.equal(decision.kind, 'allow')
  t.equal(decision.reason, 'public')
  t.equal(called, 0)
})

t.test('roles are expanded once per verified token and policy set; a reload expands them again', async (t) => {
  const dir = t.testdir()
  mkdirSync(dir, { recursive: true })
  const write = (inherits: string): void => writeFileSync(join(dir, 'app.yaml'),
    `roles:\n  admin: { permissions: [users:write], inherits: [${inherits}] }\n  viewer: { permissions: [reports:read] }\n  auditor: { permissions: [audit:read] }\n` +
    'rules:\n  - { path: /reports/**, permissions: [reports:read] }\n  - { path: /audit/**, permissions: [audit:read] }\n')
  write('viewer')
  const source = { current: loadPolicies(dir, 'authenticated') }
  // One verified-token object, as the verifier's cache hands back on every hit.
  const outcome = validToken(['admin'])
  let verifications = 0
  const deps: DeciderDeps = {
    policy: source,
    verifier: { remembered: () => outcome, verify: async () => { verifications++; return outcome } } as unknown as AccessTokenVerifier,
    headers: { ...DEFAULT_HEADERS, pass_access_token: false, pass_authorization_header: false },
    claims: { mapping: KEYCLOAK_CLAIMS, clientIds: ['app'] },
    prefix: '/_gatehouse',
    log: createLogger({ level: 'silent' })
  }
  const decide = createDecider(deps)
  const first = await decide(facts('/reports/1'))
  const second = await decide(facts('/reports/2'))
  t.equal(first.kind, 'allow')
  t.equal(first.reason, 'requirements_met')
  if (first.kind !== 'allow' || second.kind !== 'allow') throw new Error('expected allows')
  t.equal(first.identity, second.identity, 'the same expanded identity object: expansion is not per request')
  t.equal(first.headers, second.headers)
  t.same(first.identity?.roles, ['admin', 'viewer'])
  t.equal(first.headers['x-auth-request-roles'], 'admin,viewer')
  t.equal(first.headers['x-auth-request-permissions'], 'users:write,reports:read')
  const audit = await decide(facts('/audit/log'))
  t.match(audit, { kind: 'deny', status: 403, reason: 'missing_permission', missing: 'permissions audit:read' })

  write('viewer, auditor')
  source.current = loadPolicies(dir, 'authenticated')
  const after = await decide(facts('/audit/log'))
  t.equal(after.kind, 'allow', 'the new set decides the known token')
  if (after.kind === 'allow') {
    t.not(after.identity, first.identity, 'expanded again under the new set')
    t.equal(after.headers['x-auth-request-permissions'], 'users:write,reports:read,audit:read')
  }
  t.equal(verifications, 0, 'the token was never verified again: only the expansion was redone')
})

t.test('a host header decides rules with hosts; facts.host wins over it', async (t) => {
  const dir = t.testdir()
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'app.yaml'), 'rules:\n  - { path: /**, hosts: [status.example.com], allow: public }\n')
  const decide = createDecider({
    policy: { current: loadPolicies(dir, 'deny') },
    verifier: { remembered: () => null, verify: async () => validToken([]) } as unknown as AccessTokenVerifier,
    headers: { ...DEFAULT_HEADERS, pass_access_token: false, pass_authorization_header: false },
    claims: { mapping: KEYCLOAK_CLAIMS, clientIds: ['app'] },
    prefix: '/_gatehouse',
    log: createLogger({ level: 'silent' })
  })
  t.equal((await decide({ entry: 'proxy', method: 'GET', target: '/x', headers: { host: 'Status.Example.com:8080' } })).reason, 'public')
  t.equal((await decide({ entry: 'proxy', method: 'GET', target: '/x', headers: { host: 'app.example.com' } })).reason, 'denied_by_policy')
  t.equal((await decide({ entry: 'forward_auth', method: 'GET', target: '/x', host: 'status.example.com', headers: { host: 'gatehouse:4180' } })).reason, 'public')
  t.equal((await decide({ entry: 'proxy', method: 'GET', target: '/x', headers: {} })).reason, 'denied_by_policy', 'no host: no rule with hosts')
})
