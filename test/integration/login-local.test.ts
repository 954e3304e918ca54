import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startCluster } from '../fixtures/cluster.ts'
import { captureLog, startGatehouse, TEST_SECRETS, writeConfig } from '../fixtures/gatehouse.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { addLocalUser, formLogin, takeKeycloakDown } from '../fixtures/sessions.ts'
import { AuditLogRepository } from '../../src/store/audit-log.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'

t.test('circuit open: the browser gets the local form, signs in, and reaches the app in mode local', async (t) => {
  const cluster = await startCluster(t, 1)
  const [server] = cluster.servers
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' } }))
  await gatehouse.started
  await addLocalUser(gatehouse.db, 'carol', 'carol-local-password', ['editor'])
  await takeKeycloakDown(server!, gatehouse.app)
  const browser = new BrowserClient()

  const page = await browser.get(`${gatehouse.proxyUrl}/reports`)
  t.equal(page.status, 200)
  t.equal(new URL(page.url).pathname, '/_gatehouse/login', 'sent to the login page, which is the local form')
  t.match(page.body, 'Single sign-on is unavailable')
  t.match(page.body, '<label for="username">')
  t.match(page.body, '<label for="password">')
  t.match(page.headers['content-security-policy'], /default-src 'none'/)
  t.equal(page.headers['x-frame-options'], 'DENY')

  const done = await browser.submit(page, { username: 'carol', password: 'carol-local-password' })
  t.equal(done.status, 200)
  t.equal(new URL(done.url).pathname, '/reports')
  const seen = cluster.upstream.requests.at(-1)
  t.equal(seen?.headers['x-auth-request-mode'], 'local')
  t.equal(seen?.headers['x-auth-request-user'], 'carol')
  t.equal(seen?.headers['x-auth-request-roles'], 'editor')
  const audit = new AuditLogRepository(gatehouse.db).since(0, 'login')
  t.match(audit.at(-1), { actor: 'carol', result: 'success', authMode: 'local' })
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_logins_total\{mode="local",result="success"\} 1/)
  t.match(metrics, /gatehouse_sessions_active\{mode="local"\} 1/)
  t.match(metrics, /gatehouse_requests_total\{decision="allow",auth_mode="local",code="2xx"\} 1/)
})

t.test('local-primary with Keycloak up: the local password decides and Keycloak tokens come too', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' } }))
  await gatehouse.started
  // The same user in both places, with the same password.
  await addLocalUser(gatehouse.db, 'alice', 'alice-password', ['admin'])
  const browser = new BrowserClient()
  const done = await formLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')
  t.equal(done.status, 200)
  t.equal(cluster.upstream.requests.at(-1)?.headers['x-auth-request-mode'], 'keycloak')
  t.equal(cluster.standin.grantCount('password'), 1)
  const wrong = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'alice', 'not-her-password')
  t.equal(wrong.status, 401)
  t.equal(cluster.standin.grantCount('password'), 1, 'a wrong local password never reaches Keycloak')
})

t.test('local_auth.allow [admin]: during an outage only admins get in, others are told why', async (t) => {
  const cluster = await startCluster(t, 1)
  const [server] = cluster.servers
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' }, local_auth: { allow: ['admin'] } }))
  await gatehouse.started
  await addLocalUser(gatehouse.db, 'root', 'root-break-glass', ['admin'])
  await addLocalUser(gatehouse.db, 'dave', 'dave-local-password', ['user'])
  await takeKeycloakDown(server!, gatehouse.app)

  const refused = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'dave', 'dave-local-password')
  t.equal(refused.status, 403)
  t.match(refused.body, 'may not sign in without it')
  const admin = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'root', 'root-break-glass')
  t.equal(admin.status, 200)
  t.equal(cluster.upstream.requests.at(-1)?.headers['x-auth-request-user'], 'root')
})

t.test('keycloak-primary: a password Keycloak accepted works during an outage, with the same roles', async (t) => {
  const cluster = await startCluster(t, 1)
  const [server] = cluster.servers
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()))
  await gatehouse.started

  const online = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'alice', 'alice-password')
  t.equal(online.status, 200)
  const onlineSeen = cluster.upstream.requests.at(-1)
  t.equal(onlineSeen?.headers['x-auth-request-mode'], 'keycloak')

  await takeKeycloakDown(server!, gatehouse.app)
  const offline = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'alice', 'alice-password')
  t.equal(offline.status, 200)
  const offlineSeen = cluster.upstream.requests.at(-1)
  t.equal(offlineSeen?.headers['x-auth-request-mode'], 'cached')
  t.equal(offlineSeen?.headers['x-auth-request-roles'], onlineSeen?.headers['x-auth-request-roles'], 'the same roles')
  t.equal(offlineSeen?.headers['x-auth-request-user'], onlineSeen?.headers['x-auth-request-user'], 'the same user id (sub)')

  const wrong = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'alice', 'alice-wrong')
  t.equal(wrong.status, 401)
  t.match(wrong.body, 'Invalid user name or password.')
  const never = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'bob', 'bob-password')
  t.equal(never.status, 401, 'a user never seen online has no cached credential')
})

t.test('lockout: after max_failed_attempts the form answers 429 with Retry-After, even for the right password', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' }, security: { max_failed_attempts: 3, lockout_minutes: 10 } }))
  await gatehouse.started
  await addLocalUser(gatehouse.db, 'erin', 'erin-local-password')
  for (let i = 0; i < 3; i++) t.equal((await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'erin', `guess-${i}`)).status, 401)
  const locked = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'erin', 'erin-local-password')
  t.equal(locked.status, 429)
  const retry = Number(locked.headers['retry-after'])
  t.ok(retry > 540 && retry <= 600, `Retry-After ${retry} is the lockout left`)
  t.match(locked.body, 'Too many failed sign-in attempts')
  const actions = new AuditLogRepository(gatehouse.db).since(0).map((e) => `${e.action}:${e.result}`)
  t.ok(actions.includes('lockout:success'), 'the lockout is audited')
})

t.test('web safety: open redirects land on /, a POST without CSRF is 403, a tampered cookie means a new login', async (t) => {
  const cluster = await startCluster(t, 1)
  const log = captureLog()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' } }), { log })
  await gatehouse.started
  await addLocalUser(gatehouse.db, 'frank', 'frank-local-password')

  for (const rd of ['//evil.example', '/\\evil.example', 'https://evil.example', '%2F%2Fevil.example', '/%2F%2Fevil.example', '/%5Cevil.example', '/\t/evil.example', 'javascript:alert(1)']) {
    const res = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'frank', 'frank-local-password', rd, false)
    t.equal(res.status, 303)
    t.equal(res.headers.location, '/', `rd=${JSON.stringify(rd)} lands on /`)
  }
  const fine = await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'frank', 'frank-local-password', '/a/b?c=d', false)
  t.equal(fine.headers.location, '/a/b?c=d')

  const noCsrf = await fetch(`${gatehouse.proxyUrl}/_gatehouse/login`, { method: 'POST', body: new URLSearchParams({ username: 'frank', password: 'frank-local-password', rd: '/' }), redirect: 'manual' })
  t.equal(noCsrf.status, 403)
  const browser = new BrowserClient()
  const page = await browser.get(`${gatehouse.proxyUrl}/_gatehouse/login?form=1&rd=/`)
  const forged = await browser.submit(page, { username: 'frank', password: 'frank-local-password', csrf: 'forged' })
  t.equal(forged.status, 403, 'a wrong CSRF token is refused too')

  const signedIn = new BrowserClient()
  t.equal((await formLogin(signedIn, gatehouse.proxyUrl, 'frank', 'frank-local-password')).status, 200)
  const good = signedIn.cookie(gatehouse.proxyUrl, 'gatehouse_session')?.value as string
  const tampered = good.slice(0, 5) + (good[5] === 'A' ? 'B' : 'A') + good.slice(6)
  signedIn.setCookie(gatehouse.proxyUrl, 'gatehouse_session', tampered)
  const again = await signedIn.get(`${gatehouse.proxyUrl}/hello`, { follow: false })
  t.equal(again.status, 302)
  t.match(again.headers.location, /^\/_gatehouse\/login\?rd=/)
  const api = await fetch(`${gatehouse.proxyUrl}/hello`, { headers: { cookie: `gatehouse_session=${tampered}` } })
  t.equal(api.status, 401, 'a non-browser request gets 401, not a redirect')
  t.notMatch(log.text(), 'frank-local-password')
  t.notMatch(log.text(), good)
})

t.test('change password: local-primary changes the hash at once and sends it to Keycloak now, through the encrypted queue', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, { ...cluster.settings(), auth: { primary: 'local' } }))
  await gatehouse.started
  // The same person in both places, as with auth.primary local after migrate-to-keycloak.
  await addLocalUser(gatehouse.db, 'alice', 'alice-password')
  const browser = new BrowserClient()
  t.equal((await formLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')).status, 200)

  const form = await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password`)
  t.equal(form.status, 200)
  t.match(form.body, '<label for="current">')
  const change = async (fields: Record<string, string>): Promise<{ status: number, body: string }> => await browser.submit(await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password`), fields)
  t.equal((await change({ current: 'wrong', new: 'a-new-password-1', confirm: 'a-new-password-1' })).status, 401)
  const short = await change({ current: 'alice-password', new: 'short', confirm: 'short' })
  t.equal(short.status, 400)
  t.match(short.body, 'at least 12 characters')
  t.match((await change({ current: 'alice-password', new: 'alice-is-my-name', confirm: 'alice-is-my-name' })).body, 'must not contain your user name')
  t.match((await change({ current: 'alice-password', new: 'a-brand-new-pass', confirm: 'a-different-one!' })).body, 'do not match')
  const ok = await change({ current: 'alice-password', new: 'a-brand-new-pass', confirm: 'a-brand-new-pass' })
  t.equal(ok.status, 200)
  t.match(ok.body, 'Your password has been changed')

  await gatehouse.app.sync.worker.cycle()
  t.equal(cluster.standin.passwordOf('alice'), 'a-brand-new-pass', 'Keycloak has the new password')
  t.equal(cluster.standin.adminCount('PUT', '/reset-password'), 1)
  const items = new SyncQueueRepository(gatehouse.db, new KeyRing(TEST_SECRETS.encryption_keys)).list()
  t.match(items, [{ operation: 'password_change', username: 'alice', status: 'done', hasSecret: false }], 'done, and the password erased')
  const file = join(dir, 'gatehouse.db')
  const bytes = Buffer.concat([readFileSync(file), existsSync(`${file}-wal`) ? readFileSync(`${file}-wal`) : Buffer.alloc(0)])
  t.equal(bytes.indexOf(Buffer.from('a-brand-new-pass')), -1, 'the password never sat in the file in plain text')
  t.equal((await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'alice', 'alice-password')).status, 401, 'the old password is gone')
  t.equal((await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'alice', 'a-brand-new-pass')).status, 200)
  t.equal(cluster.upstream.requests.at(-1)?.headers['x-auth-request-mode'], 'keycloak', 'and Keycloak takes it too')
  const noCsrf = await fetch(`${gatehouse.proxyUrl}/_gatehouse/password`, { method: 'POST', body: new URLSearchParams({ current: 'a-brand-new-pass', new: 'x'.repeat(20), confirm: 'x'.repeat(20) }) })
  t.equal(noCsrf.status, 403)
})

t.test('change password: keycloak-primary refuses while Keycloak is away, unless told to queue', async (t) => {
  const cluster = await startCluster(t, 1)
  const [server] = cluster.servers
  for (const queue of [false, true]) {
    const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), local_auth: { queue_password_changes: queue } }))
    await gatehouse.started
    const browser = new BrowserClient()
    t.equal((await formLogin(browser, gatehouse.proxyUrl, 'bob', 'bob-password')).status, 200)
    await takeKeycloakDown(server!, gatehouse.app)
    const form = await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password`)
    const res = await browser.submit(form, { current: 'bob-password', new: 'the-next-password', confirm: 'the-next-password' })
    t.equal(res.status, queue ? 200 : 503, queue ? 'queued' : 'refused')
    t.equal(cluster.standin.passwordOf('bob'), 'bob-password', 'Keycloak is untouched while away')
    await server!.setMode('pass')
  }
})

t.test('change password: keycloak-primary checks the current password with Keycloak and sends the new one now', async (t) => {
  const cluster = await startCluster(t, 1)
  const [server] = cluster.servers
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()))
  await gatehouse.started
  const browser = new BrowserClient()
  t.equal((await formLogin(browser, gatehouse.proxyUrl, 'bob', 'bob-password')).status, 200)
  const wrong = await browser.submit(await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password`), { current: 'not-it', new: 'the-next-password', confirm: 'the-next-password' })
  t.equal(wrong.status, 401)
  const res = await browser.submit(await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password`), { current: 'bob-password', new: 'the-next-password', confirm: 'the-next-password' })
  t.equal(res.status, 200)
  await gatehouse.app.sync.worker.cycle()
  t.equal(cluster.standin.passwordOf('bob'), 'the-next-password')
  // The cached credential follows, so the new password also works during an outage.
  await takeKeycloakDown(server!, gatehouse.app)
  t.equal((await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'bob', 'the-next-password')).status, 200)
  t.equal(cluster.upstream.requests.at(-1)?.headers['x-auth-request-mode'], 'cached')
})

t.test('behind TLS the cookies are Secure and carry the __Host- prefix', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' }, server: { trust_proxy: true } }))
  await gatehouse.started
  await addLocalUser(gatehouse.db, 'hana', 'hana-local-password')
  const browser = new BrowserClient({ 'x-forwarded-proto': 'https' })
  t.equal((await formLogin(browser, gatehouse.proxyUrl, 'hana', 'hana-local-password')).status, 200)
  const session = browser.cookie(gatehouse.proxyUrl, '__Host-gatehouse_session')
  t.ok(session?.secure, 'Secure')
  t.ok(session?.httpOnly, 'HttpOnly')
  t.equal(session?.sameSite, 'lax')
  t.ok(browser.cookie(gatehouse.proxyUrl, '__Host-gatehouse_csrf')?.secure)
  t.notOk(browser.cookie(gatehouse.proxyUrl, 'gatehouse_session'), 'no unprefixed cookie')
  t.equal(cluster.upstream.requests.at(-1)?.headers['x-auth-request-user'], 'hana')
})
