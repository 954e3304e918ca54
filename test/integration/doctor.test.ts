import t from 'tap'
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startCluster } from '../fixtures/cluster.ts'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { keycloakSettings, startGatehouse, TEST_SECRETS, writeConfig } from '../fixtures/gatehouse.ts'
import { runInProcess } from '../fixtures/cli.ts'
import { addLocalUser, freePort } from '../fixtures/sessions.ts'
import { manualClock } from '../fixtures/clock.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { openDatabase } from '../../src/store/db.ts'
import { loadMigrations, migrate } from '../../src/store/migrate.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import type { CheckResult } from '../../src/doctor/checks.ts'

interface Diagnosis { checks: CheckResult[], summary: { pass: number, warn: number, fail: number } }

async function diagnoseJson (dir: string, options: Parameters<typeof runInProcess>[1] = {}): Promise<{ code: number | null, report: Diagnosis, stderr: string }> {
  const result = await runInProcess(['doctor', 'diagnose', '--json', '-c', join(dir, 'config.yaml')], options)
  return { code: result.code, report: JSON.parse(result.stdout) as Diagnosis, stderr: result.stderr }
}

const named = (report: Diagnosis, prefix: string): CheckResult[] => report.checks.filter((c) => c.name === prefix || c.name.startsWith(`${prefix} `) || c.name.startsWith(`${prefix}:`))

function privateFiles (dir: string): void {
  for (const f of readdirSync(dir)) if (f.startsWith('gatehouse.db') || f === 'config.yaml') chmodSync(join(dir, f), 0o600)
  chmodSync(dir, 0o700)
}

t.test('all well: every check passes, and the text report has a line each', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  const config = writeConfig(dir, { ...cluster.settings(), admin: { host: '127.0.0.1', port: await freePort() } }, { 'app.yaml': 'rules:\n  - paths: [/public/**]\n    allow: public\n' })
  const gatehouse = await startGatehouse(t, config)
  await gatehouse.started
  await gatehouse.app.keycloak.jwks.refresh('manual')
  privateFiles(dir)
  // As in production: the secrets come from the environment, the file only names them.
  const file = join(dir, 'config.yaml')
  const env = { ENCRYPTION_KEY: TEST_SECRETS.encryption_keys[0] as string, COOKIE_KEY: TEST_SECRETS.cookie_keys[0] as string, CLIENT_SECRET: cluster.standin.clientSecret as string }
  writeFileSync(file, Object.entries(env).reduce((text, [name, value]) => text.replaceAll(value, `\${${name}}`), readFileSync(file, 'utf8')))
  const { code, report } = await diagnoseJson(dir, { env })
  t.same(report.checks.filter((c) => c.status !== 'pass'), [], 'nothing to fix')
  t.equal(code, 0)
  t.same(report.checks.map((c) => c.name), ['config', 'policies', 'database', 'permissions: database', 'permissions: secrets', `keycloak ${cluster.servers[0]?.url}`, `issuer ${cluster.servers[0]?.url}`, `clock ${cluster.servers[0]?.url}`, 'client credentials', 'admin api', 'jwks', 'sync queue', 'running instance'])
  t.match(named(report, 'client credentials')[0]?.detail, `Keycloak accepts client gatehouse's credentials (client_secret_basic)`)
  t.match(named(report, 'clock')[0]?.detail, /this host's clock is (in step with Keycloak's|\d s (ahead of|behind) Keycloak's) \(by its Date header; tolerance 30 s\)/)
  t.match(named(report, 'running instance')[0]?.detail, /^mode normal at http:\/\/127\.0\.0\.1:\d+/)
  const text = await runInProcess(['doctor', 'diagnose', '-c', join(dir, 'config.yaml')], { env })
  t.equal(text.code, 0)
  t.match(text.stdout, /^PASS {2}config +valid: /m)
  t.match(text.stdout, /^13 passed, 0 warnings, 0 failed$/m)
})

t.test('a wrong client secret, a server that refuses, a world-readable database: each named with its fix', async (t) => {
  const cluster = await startCluster(t, 2)
  const dir = t.testdir()
  const settings = cluster.settings()
  writeConfig(dir, { ...settings, keycloak: { ...(settings.keycloak as Record<string, unknown>), client_secret: 'not-the-secret' } })
  // A database written by a first start (its tables exist), left readable by everyone.
  openDatabase({ path: join(dir, 'gatehouse.db') }).db.close()
  chmodSync(join(dir, 'gatehouse.db'), 0o644)
  await cluster.servers[1]?.setMode('refuse')
  const { code, report } = await diagnoseJson(dir)
  t.equal(code, 1, 'exit 1: a check failed')
  const secret = named(report, 'client credentials')[0]
  t.equal(secret?.status, 'fail')
  t.match(secret?.detail, 'Keycloak refuses client gatehouse\'s credentials (unauthorized_client)')
  t.match(secret?.fix, 'set keycloak.client_secret to client gatehouse\'s secret (Keycloak admin console: Clients → gatehouse → Credentials)')
  const down = named(report, `keycloak ${cluster.servers[1]?.url}`)[0]
  t.match(down, { status: 'fail', detail: /^unreachable: refused: / })
  t.match(down?.fix, `nothing accepts connections at ${cluster.servers[1]?.url}: start Keycloak there, or correct keycloak.ha.servers`)
  t.equal(named(report, `keycloak ${cluster.servers[0]?.url}`)[0]?.status, 'pass', 'the other server answers')
  const perms = named(report, 'permissions: database')[0]
  t.match(perms, { status: 'fail', detail: `${join(dir, 'gatehouse.db')} is readable by every user (0644)` })
  t.match(perms?.fix, `chmod 600 ${join(dir, 'gatehouse.db')}*`)
  t.match(named(report, 'permissions: secrets')[0], { status: 'fail', detail: /holds secrets\.encryption_keys\[0\], secrets\.cookie_keys\[0\], keycloak\.client_secret in clear and is readable by others \(0644\)/ })
  const text = await runInProcess(['doctor', 'diagnose', '-c', join(dir, 'config.yaml')])
  t.match(text.stdout, /^FAIL {2}client credentials +Keycloak refuses/m)
  t.match(text.stdout, /^ +fix: set keycloak\.client_secret/m)
})

t.test('an issuer mismatch (Keycloak\'s hostname is not keycloak.issuer) is named with both fixes', async (t) => {
  const standin = await startKeycloakStandin({ issuerBase: 'https://sso.example.test' })
  t.teardown(() => standin.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const dir = t.testdir()
  const wrongIssuer = `${standin.baseUrl}/realms/test`
  writeConfig(dir, keycloakSettings({ ...standin, issuer: wrongIssuer }, upstream.url))
  const { code, report } = await diagnoseJson(dir)
  t.equal(code, 1)
  const issuer = named(report, 'issuer')[0]
  t.equal(issuer?.status, 'fail')
  t.equal(issuer?.detail, `discovery names https://sso.example.test/realms/test, but keycloak.issuer is ${wrongIssuer}: every token will be refused, and the endpoints are not used`)
  t.equal(issuer?.fix, `set keycloak.issuer to https://sso.example.test/realms/test if that is the URL browsers reach Keycloak at; otherwise set Keycloak's hostname (KC_HOSTNAME) so that it names ${wrongIssuer}`)
})

t.test('a clock two minutes ahead of Keycloak\'s Date header fails the clock check', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  writeConfig(dir, cluster.settings())
  const { report } = await diagnoseJson(dir, { clock: manualClock(Date.now() + 120_000) })
  const clock = named(report, 'clock')[0]
  t.equal(clock?.status, 'fail')
  t.match(clock?.detail, /^this host's clock is 1[12]\d s ahead of Keycloak's \(by its Date header\): more than tokens\.clock_skew_seconds \(30 s\)/)
  t.match(clock?.fix, 'synchronise this host\'s clock')
})

t.test('doctor fix applies pending migrations, gives back expired leases and resets the running instance\'s circuits', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  const settings = cluster.settings()
  const config = writeConfig(dir, { ...settings, admin: { host: '127.0.0.1', port: await freePort() }, sync: { enabled: false }, keycloak: { ...(settings.keycloak as Record<string, unknown>), resilience: { failure_threshold: 1 } } })
  // A database at schema 2, as the previous release left it, with one item a dead worker held.
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db'), migrate: false })
  migrate(db, loadMigrations().slice(0, 2))
  db.close()
  const before = await diagnoseJson(dir)
  t.match(named(before.report, 'database')[0], { status: 'warn', detail: /schema version 2; this Gatehouse needs \d+ \(pending: 003-operations/, fix: 'gatehouse doctor fix applies the migrations (serve applies them too when it starts)' })
  const fixed = await runInProcess(['doctor', 'fix', '--json', '-c', join(dir, 'config.yaml')])
  t.equal(fixed.code, 0, fixed.stderr)
  const fixes = (JSON.parse(fixed.stdout) as { fixes: Array<{ name: string, done: string, changed: boolean }> }).fixes
  t.match(fixes.find((f) => f.name === 'database'), { changed: true, done: /^schema 2 → \d+: applied 003-operations/ })
  t.match(fixes.find((f) => f.name === 'circuits'), { changed: false, done: /no running instance answers/ })

  const gatehouse = await startGatehouse(t, config)
  await gatehouse.started
  const queue = new SyncQueueRepository(gatehouse.db, new KeyRing(TEST_SECRETS.encryption_keys))
  queue.enqueue({ username: 'carol', operation: 'user_disable', payload: { keycloak_id: null } }, Date.now() - 600_000)
  queue.claim('dead-worker', Date.now() - 300_000, 10, 60_000)
  await cluster.servers[0]?.setMode('refuse')
  await gatehouse.app.keycloak.jwks.refresh('manual')
  t.equal(gatehouse.app.keycloak.pool.status()[0]?.state, 'open')
  await cluster.servers[0]?.setMode('pass')
  privateFiles(dir)
  const stuck = await diagnoseJson(dir)
  t.match(named(stuck.report, 'sync queue')[0], { status: 'warn', detail: '1 item is held by a worker whose lease ran out (it died or hangs)', fix: /gatehouse doctor fix gives them back/ })
  t.match(named(stuck.report, 'running instance')[0], { status: 'warn', detail: /^mode degraded; open circuits: / })

  const second = await runInProcess(['doctor', 'fix', '-c', join(dir, 'config.yaml')])
  t.equal(second.code, 0, second.stderr)
  t.match(second.stdout, /^FIXED {2}sync leases +gave back 1 item held by a worker whose lease ran out$/m)
  t.match(second.stdout, new RegExp(`^FIXED {2}circuits +reset ${cluster.servers[0]?.url} on the running instance$`, 'm'))
  t.equal(gatehouse.app.keycloak.pool.status()[0]?.state, 'closed', 'the instance\'s circuit is closed')
  t.match(queue.list()[0], { status: 'pending', leaseOwner: null })
  const reset = await fetch(`${gatehouse.adminUrl}/breakers/reset`, { method: 'POST', body: 'x=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(reset.status, 415, 'a form post (what a web page can send) cannot reset circuits')
})

t.test('doctor test-auth walks a user through each layer', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  writeConfig(dir, { ...cluster.settings(), auth: { primary: 'local' } })
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
  await addLocalUser(db, 'carol', 'carol-local-password', ['editor'])
  db.close()
  const withPassword = await runInProcess(['doctor', 'test-auth', 'carol', '--json', '-c', join(dir, 'config.yaml')], { input: 'carol-local-password\n' })
  t.equal(withPassword.code, 0, withPassword.stderr)
  const report = JSON.parse(withPassword.stdout) as { mode: string, password_checked: boolean, layers: Array<{ layer: string, verdict: string, facts: string[] }>, login_now: { verdict: string, by: string } }
  t.equal(report.mode, 'normal')
  t.equal(report.password_checked, true)
  t.match(report.layers.find((l) => l.layer === 'local'), { verdict: 'yes', facts: ['a local user', /^enabled: yes; roles: editor/, 'the password given matches the stored hash'] })
  t.match(report.layers.find((l) => l.layer === 'keycloak'), { verdict: 'no', facts: ['reachable', 'no user carol in realm test', /^Keycloak refuses the password grant/] })
  t.same(report.login_now, { verdict: 'yes', by: 'the local password (auth.primary local)' })

  const wrong = await runInProcess(['doctor', 'test-auth', 'carol', '-c', join(dir, 'config.yaml')], { input: 'not-her-password\n' })
  t.equal(wrong.code, 1, 'nothing would let her in with that password')
  t.match(wrong.stdout, 'the password given does not match the stored hash')
  t.match(wrong.stdout, /^login now: no, decided by the local password/m)

  const alice = await runInProcess(['doctor', 'test-auth', 'alice', '-c', join(dir, 'config.yaml')])
  t.match(alice.stdout, 'no password given (pipe one on standard input to check it)')
  t.match(alice.stdout, /^keycloak: if the password is right\n {2}reachable\n {2}user [0-9a-f-]+ in realm test: enabled yes/m)
  t.match(alice.stdout, /^login now: no, decided by the local password \(auth\.primary local\)/m, 'with auth.primary local, a Keycloak-only user cannot use the form')
})
