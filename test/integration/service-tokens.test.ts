// Service tokens (issue 16) end to end: issued by the CLI, checked by a running serve on real
// sockets, rotated with a grace period on an injected clock, revoked at once, decided by the
// same policies at every entry point, with Keycloak unreachable throughout.
import t from 'tap'
import { readFileSync, existsSync } from 'node:fs'
import { createRequire, syncBuiltinESMExports } from 'node:module'
import { join } from 'node:path'
import { runInProcess, type CliResult } from '../fixtures/cli.ts'
import { manualClock } from '../fixtures/clock.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest, type RawResponse } from '../fixtures/http-client.ts'
import { startEchoUpstream, type EchoUpstream } from '../fixtures/upstream.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { addLocalUser, formLogin } from '../fixtures/sessions.ts'
import { ENTRY_POINTS, type EntryPointClient } from '../fixtures/entry-points.ts'
import { newToken, parseToken } from '../../src/service-token/format.ts'
import { AuditLogRepository } from '../../src/store/audit-log.ts'

const DAY = 86_400_000
const POLICIES = { 'app.yaml': readFileSync(join(import.meta.dirname, '../../policies/app.yaml'), 'utf8') }

const upstream: EchoUpstream = await startEchoUpstream()
t.teardown(() => upstream.close())

/** Settings with Keycloak unreachable (nothing listens on port 9): service tokens must not care. */
function settings (extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    upstream: { url: upstream.url },
    keycloak: { issuer: 'http://127.0.0.1:9/realms/test', server: 'http://127.0.0.1:9', client_id: 'app', timeout_ms: 300 },
    auth: { primary: 'local' },
    ...extra
  }
}

type Cli = (...args: string[]) => Promise<CliResult>
function cliFor (dir: string): Cli {
  return async (...args) => await runInProcess(['tokens', ...args, '-c', join(dir, 'config.yaml')])
}

/** `tokens create` and the token it printed (alone on standard output). */
async function create (cli: Cli, name: string, ...args: string[]): Promise<string> {
  const r = await cli('create', name, ...args)
  if (r.code !== 0) throw new Error(`tokens create failed: ${r.stderr}`)
  return r.stdout.trim()
}

async function rotate (cli: Cli, name: string, ...args: string[]): Promise<string> {
  const r = await cli('rotate', name, ...args)
  if (r.code !== 0) throw new Error(`tokens rotate failed: ${r.stderr}`)
  return r.stdout.trim()
}

/** The identifier of a well-formed token. */
function idOf (token: string): string {
  const parsed = parseToken(token)
  if (!('id' in parsed)) throw new Error('malformed token')
  return parsed.id
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

/** One proxied request and whether it reached the app. */
async function ask (proxyUrl: string, path: string, headers: Record<string, string>): Promise<RawResponse & { reached: boolean }> {
  const before = upstream.requests.length
  const res = await rawRequest(proxyUrl, path, { headers })
  return { ...res, reached: upstream.requests.length > before }
}

t.test('tokens create prints a ght_ token once; it authenticates as service:NAME in mode service with its roles', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES))
  const cli = cliFor(dir)
  const token = await create(cli, 'nightly-report', '--roles', 'reports,admin', '--description', 'the nightly export')
  t.match(token, /^ght_[0-9A-Za-z]{61}$/)
  t.notOk('malformed' in parseToken(token), 'the checksum is valid')
  const res = await ask(gatehouse.proxyUrl, '/admin/export', bearer(token))
  t.equal(res.status, 200)
  t.ok(res.reached)
  const seen = upstream.requests.at(-1)?.headers ?? {}
  t.equal(seen['x-auth-request-user'], 'service:nightly-report')
  t.equal(seen['x-auth-request-mode'], 'service')
  t.equal(seen['x-auth-request-roles'], 'reports,admin')
  t.equal(seen['x-auth-request-preferred-username'], undefined, 'a service is not a person: no user name')
  t.equal(seen['x-auth-request-email'], undefined)

  const list = await cli('list', '--json')
  t.equal(list.code, 0)
  const [view] = JSON.parse(list.stdout) as Array<Record<string, unknown>>
  t.match(view, { name: 'nightly-report', id: idOf(token), state: 'active', roles: ['reports', 'admin'], description: 'the nightly export', previous_live: false })
  t.notOk(list.stdout.includes(token.slice(16, 59)), 'list never shows the secret')
  const text = await cli('list')
  t.match(text.stdout, /^NAME\s+ID\s+STATE\s+ROLES\s+CREATED\s+EXPIRES\s+LAST USED\s+PREVIOUS/m)
  t.notOk(text.stdout.includes(token.slice(16, 59)))

  const again = await cli('create', 'nightly-report', '--roles', 'reports')
  t.equal(again.code, 1)
  t.match(again.stderr, /a service token named nightly-report exists .*\(ERR_SERVICE_TOKEN_EXISTS\)/)
  t.equal((await cli('create', 'Bad Name', '--roles', 'x')).code, 2, 'a name with spaces is a usage error')
  t.equal((await cli('create', 'x')).code, 2, '--roles is required')
})

t.test('rotation with grace: the old token works until the grace period ends, then 401; the new one works throughout', async (t) => {
  const dir = t.testdir()
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES), { clock })
  const cli = cliFor(dir)
  const old = await create(cli, 'ci', '--roles', 'deploy')
  t.equal((await ask(gatehouse.proxyUrl, '/hello', bearer(old))).status, 200, 'the token works (and is now cached)')
  gatehouse.app.serviceTokens.flushUses() // as the once-a-minute background write does
  const fresh = await rotate(cli, 'ci', '--grace-days', '2')
  t.not(fresh, old)
  t.not(idOf(fresh), idOf(old), 'each generation has its own identifier')

  for (const [label, advance] of [['right after the rotation', 0], ['a day later', DAY], ['a minute before the grace period ends', DAY - 2 * 60_000]] as const) {
    clock.advance(advance)
    t.equal((await ask(gatehouse.proxyUrl, '/hello', bearer(old))).status, 200, `old token, ${label}`)
    t.equal((await ask(gatehouse.proxyUrl, '/hello', bearer(fresh))).status, 200, `new token, ${label}`)
  }
  const listed = JSON.parse((await cli('list', '--json')).stdout) as Array<Record<string, unknown>>
  t.match(listed[0], { previous_live: true, previous_id: idOf(old) })

  clock.advance(3 * 60_000)
  const refused = await ask(gatehouse.proxyUrl, '/hello', bearer(old))
  t.equal(refused.status, 401, 'the old token after the grace period')
  t.notOk(refused.reached, 'the app got nothing')
  t.match(refused.headers['www-authenticate'], /^Bearer realm="gatehouse", error="invalid_token"/)
  t.equal((await ask(gatehouse.proxyUrl, '/hello', bearer(fresh))).status, 200, 'the new token still works')

  // Audit: create, rotate, and the first use after the rotation (written with the batched uses).
  gatehouse.app.serviceTokens.flushUses()
  const audit = new AuditLogRepository(gatehouse.db).since(0).filter((e) => e.action.startsWith('service_token_'))
  t.same(audit.map((e) => e.action), ['service_token_created', 'service_token_first_use', 'service_token_rotated', 'service_token_first_use'])
  t.match(audit[2]?.detail, { name: 'ci', id: idOf(fresh), previous_id: idOf(old), grace_days: 2, via: 'cli' })
  t.match(audit[3], { actor: 'service:ci', detail: { id: idOf(fresh), after_rotation: true } })

  const cleaned = await cli('cleanup', '--json')
  t.match(JSON.parse(cleaned.stdout), { previous_cleared: 0 }, 'the CLI runs on the real clock: its grace is not over yet')
})

t.test('a rotation without grace, a revoke and --previous-only from the CLI are refused by the running serve on the very next request', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES))
  const cli = cliFor(dir)
  const token = await create(cli, 'webhook', '--roles', 'hooks')
  t.equal((await ask(gatehouse.proxyUrl, '/hook', bearer(token))).status, 200)
  t.equal((await ask(gatehouse.proxyUrl, '/hook', bearer(token))).status, 200, 'served from the cache of verified tokens')

  const next = await rotate(cli, 'webhook', '--grace-days', '1')
  t.equal((await ask(gatehouse.proxyUrl, '/hook', bearer(token))).status, 200, 'inside the grace period')
  const previousOnly = await cli('revoke', 'webhook', '--previous-only')
  t.equal(previousOnly.code, 0)
  t.match(previousOnly.stdout, 'the previous token of webhook no longer works')
  const cut = await ask(gatehouse.proxyUrl, '/hook', bearer(token))
  t.equal(cut.status, 401, 'the previous token, the next request after --previous-only')
  t.notOk(cut.reached)
  t.equal((await ask(gatehouse.proxyUrl, '/hook', bearer(next))).status, 200, 'the current one is untouched')

  const revoked = await cli('revoke', 'webhook')
  t.equal(revoked.code, 0)
  t.match(revoked.stdout, 'revoked service token webhook')
  const refused = await ask(gatehouse.proxyUrl, '/hook', bearer(next))
  t.equal(refused.status, 401, 'the very next request after the revoke')
  t.notOk(refused.reached)
  t.ok(gatehouse.log.entries().some((e) => e.msg === 'service token refused' && e.reason === 'service_revoked'), 'the reason is logged')
  const again = await cli('revoke', 'webhook', '--json')
  t.match(JSON.parse(again.stdout), { name: 'webhook', changed: false }, 'revoking again changes nothing and succeeds')
  t.equal(again.code, 0)
  t.equal((await cli('revoke', 'nobody')).code, 1)
  const rotateRevoked = await cli('rotate', 'webhook')
  t.equal(rotateRevoked.code, 1)
  t.match(rotateRevoked.stderr, 'ERR_SERVICE_TOKEN_REVOKED')

  // A revoked name can be issued again, as a new token.
  const reissued = await create(cli, 'webhook', '--roles', 'hooks')
  t.equal((await ask(gatehouse.proxyUrl, '/hook', bearer(reissued))).status, 200)
  t.equal((await ask(gatehouse.proxyUrl, '/hook', bearer(next))).status, 401)
})

t.test('neither the database bytes nor the logs ever hold a secret', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES))
  const cli = cliFor(dir)
  const first = await create(cli, 'scanner', '--roles', 'read')
  const second = await rotate(cli, 'scanner')
  const wrong = newToken(idOf(first))
  for (const token of [first, second, wrong, 'ght_not-even-close']) await ask(gatehouse.proxyUrl, '/x', bearer(token))
  gatehouse.app.serviceTokens.flushUses()
  await rawRequest(gatehouse.adminUrl, '/status')
  await rawRequest(gatehouse.adminUrl, '/metrics')

  const bytes = ['gatehouse.db', 'gatehouse.db-wal'].filter((f) => existsSync(join(dir, f))).map((f) => readFileSync(join(dir, f)))
  t.ok(bytes.length > 0)
  const log = gatehouse.log.text()
  t.ok(log.includes('service token refused'), 'the refusals were logged (at debug, as captured)')
  for (const token of [first, second, wrong]) {
    const secret = token.slice(16, 59)
    for (const b of bytes) {
      t.equal(b.indexOf(token), -1, 'no token in the database')
      t.equal(b.indexOf(secret), -1, 'no secret in the database')
    }
    t.notOk(log.includes(secret), 'no secret in the log')
  }
  t.notOk(/ght_[0-9A-Za-z]{20,}/.test(log), 'no token-shaped string in the log at all')
})

t.test('a wrong token sharing a valid identifier is refused, through the same timingSafeEqual as the right one', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES))
  const cli = cliFor(dir)
  const token = await create(cli, 'batch', '--roles', 'batch')
  const sameId = newToken(idOf(token))
  t.equal(idOf(sameId), idOf(token))
  t.notOk('malformed' in parseToken(sameId), 'well formed, checksum and all')
  const unknownId = newToken('000000000000')

  // Count the calls of the real crypto.timingSafeEqual (Node's builtin exports, synchronised).
  const crypto = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')
  const original = crypto.timingSafeEqual
  const calls: Array<{ lengths: [number, number], result: boolean }> = []
  crypto.timingSafeEqual = (a, b) => {
    const result = original(a, b)
    calls.push({ lengths: [a.byteLength, b.byteLength], result })
    return result
  }
  syncBuiltinESMExports()
  t.teardown(() => { crypto.timingSafeEqual = original; syncBuiltinESMExports() })

  const counted = async (presented: string): Promise<{ status: number, reached: boolean, calls: typeof calls }> => {
    const start = calls.length
    const res = await ask(gatehouse.proxyUrl, '/hello', bearer(presented))
    return { status: res.status, reached: res.reached, calls: calls.slice(start) }
  }
  const wrong = await counted(sameId)
  t.equal(wrong.status, 401)
  t.notOk(wrong.reached)
  t.same(wrong.calls, [{ lengths: [32, 32], result: false }], 'one comparison of two 32-byte digests')
  const right = await counted(token)
  t.equal(right.status, 200)
  t.same(right.calls, [{ lengths: [32, 32], result: true }], 'the right token takes the same path: one comparison of two 32-byte digests')
  const unknown = await counted(unknownId)
  t.equal(unknown.status, 401)
  t.same(unknown.calls, [{ lengths: [32, 32], result: false }], 'an unknown identifier is compared too (against no digest)')
  const reasons = gatehouse.log.entries().filter((e) => e.msg === 'service token refused').map((e) => e.reason)
  t.same(reasons, ['service_invalid', 'service_invalid'], 'the wrong secret and the unknown identifier get the same reason')
})

t.test('malformed tokens with the prefix get a clean 401, never a 500, and never reach the JWT verifier', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES))
  const cli = cliFor(dir)
  const token = await create(cli, 'valid', '--roles', 'x')
  const flipped = `${token.slice(0, 20)}${token[20] === 'a' ? 'b' : 'a'}${token.slice(21)}`
  const cases = [
    'ght_',
    'ght_short',
    `${token}x`,
    token.slice(0, -1),
    flipped,
    `ght_${'-'.repeat(61)}`,
    `ght_${'é'.repeat(61)}`,
    `ght_${'A'.repeat(8000)}`,
    `${token.slice(0, -6)}000000`
  ]
  for (const presented of cases) {
    const res = await ask(gatehouse.proxyUrl, '/hello', { authorization: `Bearer ${presented}` })
    t.equal(res.status, 401, `${presented.slice(0, 24)}…: 401`)
    t.notOk(res.reached)
    t.match(JSON.parse(res.body), { error: 'invalid_token' })
  }
  const reasons = gatehouse.log.entries().filter((e) => e.msg === 'service token refused').map((e) => `${String(e.reason)} ${String(e.detail)}`)
  t.equal(reasons.length, cases.length, 'each refusal logged with its reason')
  t.ok(reasons.every((r) => r.startsWith('service_malformed not a valid service token (')), reasons.join('; '))
  t.ok(reasons.some((r) => r.endsWith('(checksum)')) && reasons.some((r) => r.endsWith('(length)')) && reasons.some((r) => r.endsWith('(alphabet)')))
  const scrape = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.notMatch(scrape, /^gatehouse_token_verifications_total\{/m, 'no ght_ token was handed to the JWT verifier')
  t.equal((await ask(gatehouse.proxyUrl, '/hello', bearer(token))).status, 200, 'the limit of 20 failures was not reached by 9')
})

t.test('service tokens go through proxy, forward-auth and ext_authz (HTTP and gRPC) with the same decisions, Keycloak unreachable', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings({ grpc: { enabled: true, host: '127.0.0.1', port: 0 } }), POLICIES))
  const cli = cliFor(dir)
  const admin = await create(cli, 'ops-bot', '--roles', 'admin')
  const plain = await create(cli, 'reader', '--roles', 'read')
  const revoked = await create(cli, 'old-bot', '--roles', 'admin')
  t.equal((await cli('revoke', 'old-bot')).code, 0)
  t.notOk(gatehouse.app.keycloak.pool.reachable(), 'Keycloak is unreachable')

  const cases: Array<{ name: string, path: string, token: string, allow: boolean, status: number, identity?: Record<string, string> }> = [
    { name: 'a service token on an authenticated route', path: '/hello?q=1', token: plain, allow: true, status: 200, identity: { 'x-auth-request-user': 'service:reader', 'x-auth-request-mode': 'service', 'x-auth-request-roles': 'read' } },
    { name: 'without the role the rule needs', path: '/admin/users', token: plain, allow: false, status: 403 },
    { name: 'with the role the rule needs', path: '/admin/users', token: admin, allow: true, status: 200, identity: { 'x-auth-request-user': 'service:ops-bot', 'x-auth-request-roles': 'admin' } },
    { name: 'a deny rule', path: '/actuator/env', token: admin, allow: false, status: 403 },
    { name: 'a revoked token', path: '/hello', token: revoked, allow: false, status: 401 },
    { name: 'a wrong secret', path: '/hello', token: newToken(idOf(admin)), allow: false, status: 401 },
    { name: 'a malformed token', path: '/hello', token: 'ght_broken', allow: false, status: 401 },
    { name: 'case bypass: /ADMIN', path: '/ADMIN/x', token: plain, allow: false, status: 403 }
  ]
  const clients: EntryPointClient[] = ENTRY_POINTS.map((make) => make(gatehouse, upstream, (fn) => t.teardown(fn)))
  t.same(clients.map((c) => c.name), ['proxy', 'ext_authz_http', 'ext_authz_grpc', 'forward_auth'])
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      for (const client of clients) {
        const before = upstream.requests.length
        const got = await client.ask({ method: 'GET', path: c.path, headers: { ...bearer(c.token), 'x-auth-request-user': 'service:root' } })
        t.equal(got.allow, c.allow, `${client.name}: ${c.allow ? 'allowed' : 'denied'}`)
        t.equal(got.status, c.status, `${client.name}: status`)
        if (c.status === 401) t.match(got.wwwAuthenticate, /^Bearer realm="gatehouse", error="invalid_token"/, `${client.name}: WWW-Authenticate`)
        if (c.identity !== undefined) t.match(got.identity, c.identity, `${client.name}: identity headers`)
        if (c.allow) t.not(got.identity['x-auth-request-user'], 'service:root', `${client.name}: the spoofed header is gone`)
        if (client.name === 'proxy' && !c.allow) t.equal(upstream.requests.length, before, 'proxy: the app got zero requests')
        if (client.name !== 'proxy') t.equal(upstream.requests.length, before, `${client.name}: Gatehouse itself sent the app nothing`)
      }
    })
  }
})

t.test('a service token never reaches the app: the proxy drops it, ext_authz tells Envoy to remove it; another Authorization passes', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings({ grpc: { enabled: true, host: '127.0.0.1', port: 0 }, headers: { pass_authorization_header: false } }), POLICIES))
  const token = await create(cliFor(dir), 'reader', '--roles', 'read')
  const clients = ENTRY_POINTS.map((make) => make(gatehouse, upstream, (fn) => t.teardown(fn))).filter((c) => c.name !== 'forward_auth')
  for (const client of clients) {
    for (const [label, path] of [['an authenticated route', '/hello'], ['a public route (no authentication made)', '/healthz']] as const) {
      const got = await client.ask({ method: 'GET', path, headers: { Authorization: `Bearer ${token}` } })
      t.equal(got.status, 200, `${client.name}, ${label}: allowed`)
      t.equal(got.identity.authorization, undefined, `${client.name}, ${label}: the app never sees the service token`)
      t.notOk(JSON.stringify(got.identity).includes(token), `${client.name}, ${label}: not under any name`)
    }
    // Scheme case does not matter (RFC 6750 §2.1 follows RFC 9110's case-insensitive schemes).
    const lower = await client.ask({ method: 'GET', path: '/healthz', headers: { Authorization: `bearer ${token}` } })
    t.equal(lower.identity.authorization, undefined, `${client.name}: bearer in lower case too`)
    // Any other Authorization is the app's business when pass_authorization_header is false.
    const basic = await client.ask({ method: 'GET', path: '/healthz', headers: { Authorization: 'Basic YXBwOmFwcA==' } })
    t.equal(basic.identity.authorization, 'Basic YXBwOmFwcA==', `${client.name}: a Basic header still reaches the app`)
  }
})

t.test('the policy roles of a service token are applied as a person\'s are', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES))
  const cli = cliFor(dir)
  await addLocalUser(gatehouse.db, 'carol', 'carol-local-password', ['admin'])
  await addLocalUser(gatehouse.db, 'dave', 'dave-local-password', ['read'])
  const carol = new BrowserClient()
  const dave = new BrowserClient()
  t.equal((await formLogin(carol, gatehouse.proxyUrl, 'carol', 'carol-local-password')).status, 200)
  t.equal((await formLogin(dave, gatehouse.proxyUrl, 'dave', 'dave-local-password')).status, 200)
  const cookie = (b: BrowserClient): string => `gatehouse_session=${b.cookie(gatehouse.proxyUrl, 'gatehouse_session')?.value as string}`
  const asAdmin = await create(cli, 'admin-bot', '--roles', 'admin')
  const asReader = await create(cli, 'read-bot', '--roles', 'read')

  for (const path of ['/hello', '/admin/users', '/Admin/users', '/actuator/env', '/public/x']) {
    const person = [await ask(gatehouse.proxyUrl, path, { cookie: cookie(carol) }), await ask(gatehouse.proxyUrl, path, { cookie: cookie(dave) })]
    const service = [await ask(gatehouse.proxyUrl, path, bearer(asAdmin)), await ask(gatehouse.proxyUrl, path, bearer(asReader))]
    t.same(service.map((r) => [r.status, r.reached]), person.map((r) => [r.status, r.reached]), `${path}: roles [admin] and [read] decide the same for a person and a service`)
  }
})

t.test('failed attempts are limited per client address; the lockout is audited and ends after lockout_minutes', async (t) => {
  const dir = t.testdir()
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings({ service_tokens: { max_failed_attempts: 3, lockout_minutes: 10 } }), POLICIES), { clock })
  const cli = cliFor(dir)
  const token = await create(cli, 'cron', '--roles', 'cron')
  for (let i = 0; i < 3; i++) t.equal((await ask(gatehouse.proxyUrl, '/x', bearer(newToken(idOf(token))))).status, 401)
  const locked = await ask(gatehouse.proxyUrl, '/x', bearer(token))
  t.equal(locked.status, 401, 'even the right token, from the locked address')
  t.notOk(locked.reached)
  t.match(JSON.parse(locked.body), { error: 'invalid_token', error_description: /too many failed attempts/ })
  const lockouts = new AuditLogRepository(gatehouse.db).since(0, 'service_token_lockout')
  t.equal(lockouts.length, 1)
  t.match(lockouts[0], { ip: '127.0.0.1', result: 'failure' })
  t.ok(gatehouse.log.entries().some((e) => e.msg === 'too many failed service tokens from one address; locking it out' && e.level === 40))
  clock.advance(10 * 60_000)
  t.equal((await ask(gatehouse.proxyUrl, '/x', bearer(token))).status, 200, 'after the lockout')
})

t.test('metrics and /status: tokens by state, each expiry, the ones near expiry and the alerts', async (t) => {
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, settings(), POLICIES))
  const cli = cliFor(dir)
  await create(cli, 'long-lived', '--roles', 'a', '--expires-days', '90')
  const soon = await create(cli, 'soon', '--roles', 'a', '--expires-days', '5')
  await create(cli, 'gone', '--roles', 'a')
  await cli('revoke', 'gone')
  await create(cli, 'rotated', '--roles', 'a')
  await rotate(cli, 'rotated', '--grace-days', '7')

  const scrape = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(scrape, /^gatehouse_service_tokens\{state="active"\} 2$/m)
  t.match(scrape, /^gatehouse_service_tokens\{state="expiring"\} 1$/m)
  t.match(scrape, /^gatehouse_service_tokens\{state="expired"\} 0$/m)
  t.match(scrape, /^gatehouse_service_tokens\{state="revoked"\} 1$/m)
  t.match(scrape, /^gatehouse_service_tokens\{state="in_grace"\} 1$/m)
  const expiry = Number(/^gatehouse_service_token_expiry_timestamp_seconds\{name="soon"\} (\d+)$/m.exec(scrape)?.[1])
  t.ok(Math.abs(expiry - (Date.now() + 5 * DAY) / 1000) < 120, 'the expiry in Unix seconds')
  t.notMatch(scrape, /name="gone"/, 'a revoked token has no expiry series')

  const status = await (await fetch(`${gatehouse.adminUrl}/status`)).json() as { service_tokens: { expiring: Array<{ name: string }>, alerts: Array<{ kind: string, name: string }>, total: number } }
  t.equal(status.service_tokens.total, 4)
  t.same(status.service_tokens.expiring.map((e) => e.name), ['soon'])
  t.same(status.service_tokens.alerts.map((a) => [a.kind, a.name]), [['expiring', 'soon']])
  t.ok(soon.startsWith('ght_'))

  // The dashboard and `gatehouse status` (which asks the running instance) name it too.
  const page = await (await fetch(`${gatehouse.adminUrl}/status.html`)).text()
  t.match(page, /<tbody id="service-tokens-expiring"><tr><td data-label="Token">soon<\/td>/)
  t.match(page, /id="service-token-counts">2 active · 1 expiring · 0 expired · 1 revoked · 1 in grace</)
  const text = await runInProcess(['status', '-c', join(dir, 'config.yaml')])
  t.match(text.stdout, /^tokens: {4}3 live, 1 revoked, 0 expired; expiring soon: soon \(\d{4}-/m)
})
