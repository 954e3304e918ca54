import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { captureLog, keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { runCli } from '../../src/cli/run.ts'
import { loadForServe } from '../../src/cli/config-command.ts'
import { startServer, type RunningServer } from '../../src/server.ts'

// Issue 9, items 1, 2, 8, 14, 18 and 23, through the real sidecar on a socket: each case
// passed (or answered the old way) before the fix. The policies are the shipped policies/app.yaml.

const SHIPPED_POLICY = readFileSync(new URL('../../policies/app.yaml', import.meta.url), 'utf8')
const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

const standin = await startKeycloakStandin()
t.teardown(() => standin.close())
const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(standin, upstream.url), { 'app.yaml': SHIPPED_POLICY }))
await gatehouse.app.keycloak.jwks.refresh('manual')
// bob is signed in (realm role user) but is no admin; alice is.
const bob = (await standin.passwordGrant('bob', 'bob-password')).access_token
const alice = (await standin.passwordGrant('alice', 'alice-password')).access_token

/** The response to `path`, and how many requests the upstream got meanwhile. */
async function ask (path: string, headers: Record<string, string> = {}): Promise<{ status: number, body: string, headers: Record<string, unknown>, upstreamCalls: number }> {
  const before = upstream.requests.length
  const res = await rawRequest(gatehouse.proxyUrl, path, { headers })
  return { status: res.status, body: res.body, headers: res.headers, upstreamCalls: upstream.requests.length - before }
}

const lastReason = (): unknown => gatehouse.log.entries().findLast((e) => e.msg === 'request')?.reason

t.test('item 1: a ; in any path segment is a 400 bad_path and reaches nothing', async (t) => {
  for (const path of ['/admin;x=1', '/admin;/users', '/actuator;/env', '/.git;/config', '/x/y;jsessionid=abc', '/admin%3Bx=1', '/admin%3b/users']) {
    const res = await ask(path, bearer(bob))
    t.equal(res.status, 400, path)
    t.equal(JSON.parse(res.body).error, 'bad_request', path)
    t.equal(lastReason(), 'bad_path', `${path}: logged as bad_path`)
    t.equal(res.upstreamCalls, 0, `${path}: the upstream got nothing`)
  }
  const query = await ask('/search?q=a;b&c=%3B', bearer(bob))
  t.equal(query.status, 200, 'a ; in the query string is allowed')
  t.equal(upstream.requests.at(-1)?.url, '/search?q=a;b&c=%3B', 'and reaches the app unchanged')
})

t.test('item 2: other case spellings of restricted paths are restricted too', async (t) => {
  for (const path of ['/ADMIN', '/Admin/users', '/aDMIN/x', '/Actuator/env', '/ACTUATOR', '/.GIT/config', '/.Git/HEAD', '/%41DMIN']) {
    const res = await ask(path, bearer(bob))
    t.equal(res.status, 403, path)
    t.equal(JSON.parse(res.body).error, 'forbidden', path)
    t.equal(res.upstreamCalls, 0, `${path}: the upstream got nothing`)
  }
  t.equal(lastReason(), 'missing_role')
  const denied = await ask('/Actuator/env', bearer(alice))
  t.equal(denied.status, 403, 'a deny rule denies every spelling, even to an admin')
  t.equal(lastReason(), 'denied_by_policy')
  const admin = await ask('/ADMIN/users', bearer(alice))
  t.equal(admin.status, 200, 'the role still opens every spelling')
  t.equal(admin.upstreamCalls, 1)

  const pub = await ask('/healthz')
  t.equal(pub.status, 200, 'the public rule serves its exact spelling')
  const other = await ask('/HEALTHZ')
  t.equal(other.status, 401, 'but no other spelling: that falls to the default (authenticated)')
  t.equal(other.upstreamCalls, 0)
})

t.test('item 23: a 401 without any token has no error code; a bad token is invalid_token', async (t) => {
  const none = await ask('/private')
  t.equal(none.status, 401)
  t.equal(none.headers['www-authenticate'], 'Bearer realm="gatehouse"')
  t.equal(none.upstreamCalls, 0)
  const bad = await ask('/private', bearer('not.a.jwt'))
  t.equal(bad.status, 401)
  t.equal(bad.headers['www-authenticate'], 'Bearer realm="gatehouse", error="invalid_token", error_description="token is not a well-formed JWT"')
})

t.test('item 14: a token issued further in the future than the clock skew is refused', async (t) => {
  const now = Math.floor(Date.now() / 1000)
  const ahead = await standin.mintAccessToken({ iat: now + 600, exp: now + 900 }, { username: 'bob' })
  const res = await ask('/x', bearer(ahead))
  t.equal(res.status, 401)
  t.equal(res.headers['www-authenticate'], 'Bearer realm="gatehouse", error="invalid_token", error_description="iat is in the future"')
  t.equal(lastReason(), 'token_issued_in_future')
  t.equal(res.upstreamCalls, 0)
  const withinSkew = await standin.mintAccessToken({ iat: now + 10 }, { username: 'bob' })
  t.equal((await ask('/x', bearer(withinSkew))).status, 200, 'inside the skew (30 s) it passes')
})

t.test('item 8: when a JWKS refresh withdraws a key, its cached tokens stop working at once', async (t) => {
  const s = await startKeycloakStandin()
  t.teardown(() => s.close())
  const g = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(s, upstream.url)))
  await g.app.keycloak.jwks.refresh('manual')
  const token = (await s.passwordGrant('bob', 'bob-password')).access_token
  t.equal((await rawRequest(g.proxyUrl, '/x', { headers: bearer(token) })).status, 200)
  t.equal((await rawRequest(g.proxyUrl, '/x', { headers: bearer(token) })).status, 200, 'now a cache hit')
  t.equal(g.app.verifier.cacheSize, 1)

  await s.rotateKeys({ keepOld: false })
  t.equal(await g.app.keycloak.jwks.refresh('manual'), true)
  t.equal(g.app.verifier.cacheSize, 0, 'forgotten with the key')
  const before = upstream.requests.length
  const res = await rawRequest(g.proxyUrl, '/x', { headers: bearer(token) })
  t.equal(res.status, 401, 'a token of the withdrawn key is refused')
  t.equal(g.log.entries().findLast((e) => e.msg === 'request')?.reason, 'token_unknown_kid')
  t.equal(upstream.requests.length - before, 0)
  const fresh = (await s.passwordGrant('bob', 'bob-password')).access_token
  t.equal((await rawRequest(g.proxyUrl, '/x', { headers: bearer(fresh) })).status, 200, 'tokens of the new key work')
})

t.test('item 18: a policies.dir that does not exist stops config validate and serve, naming the path', async (t) => {
  const dir = t.testdir()
  const config = writeConfig(dir, keycloakSettings(standin, upstream.url))
  const configPath = join(dir, 'config.yaml')
  const missing = join(dir, 'policies-typo')
  writeFileSync(configPath, readFileSync(configPath, 'utf8').replace('dir: ./policies', 'dir: ./policies-typo'))

  let stderr = ''
  let stdout = ''
  const output = { out: (s: string) => { stdout += s }, err: (s: string) => { stderr += `${s}\n` } }
  t.equal(await runCli(['config', 'validate', '-c', configPath], { output, env: {} }), 2, 'config validate exits 2')
  t.equal(stderr, `gatehouse: policy directory ${missing} does not exist (policies.dir)\n`)
  t.equal(stdout, '')

  // serve loads through loadForServe, then buildApp; both refuse.
  t.throws(() => loadForServe(configPath, {}), { code: 'ERR_POLICY_INVALID', message: `policy directory ${missing} does not exist (policies.dir)` })
  const wrong = { ...config, policies: { ...config.policies, dir: './policies-typo' } }
  const started: RunningServer[] = []
  t.teardown(async () => { for (const s of started) await s.stop() })
  await t.rejects(async () => { started.push(await startServer(wrong, { log: captureLog().logger })) }, { code: 'ERR_POLICY_INVALID', message: `policy directory ${missing} does not exist (policies.dir)` })
})

t.test('item 18: an existing empty policies.dir is allowed, with a warning from config validate and serve', async (t) => {
  const dir = t.testdir()
  const config = writeConfig(dir, keycloakSettings(standin, upstream.url))
  let stderr = ''
  let stdout = ''
  const output = { out: (s: string) => { stdout += s }, err: (s: string) => { stderr += `${s}\n` } }
  t.equal(await runCli(['config', 'validate', '-c', join(dir, 'config.yaml')], { output, env: {} }), 0)
  t.equal(stderr, `gatehouse: warning: ${join(dir, 'policies')}: no policy rules (no .yaml or .yml files): every route requires policies.default (authenticated)\n`)
  t.match(stdout, 'configuration is valid')

  const log = captureLog('info')
  const g = await startGatehouse(t, config, { log })
  const warning = log.entries().find((e) => e.msg === 'no policy rules (no .yaml or .yml files): every route requires policies.default (authenticated)')
  t.equal(warning?.level, 40, 'serve logs it at warn')
  t.equal(warning?.dir, './policies', 'naming policies.dir as configured')
  t.equal((await rawRequest(g.proxyUrl, '/x')).status, 401, 'the default decides')
})
