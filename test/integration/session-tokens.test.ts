import t from 'tap'
import { readFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { startCluster } from '../fixtures/cluster.ts'
import { captureLog, startGatehouse, TEST_SECRETS, writeConfig } from '../fixtures/gatehouse.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { manualClock } from '../fixtures/clock.ts'
import { formLogin, freePort, modeOf, signedIn, ssoLogin, takeKeycloakDown } from '../fixtures/sessions.ts'
import { generateSigningKey, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET } from '../fixtures/keycloak-standin.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { TokenCacheRepository } from '../../src/store/token-cache.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import { SessionsRepository } from '../../src/store/sessions.ts'

/** A one-hour grace period, a long idle timeout, and what happens after the grace. */
function graceSettings (cluster: Awaited<ReturnType<typeof startCluster>>, afterGrace: 'login' | 'local'): Record<string, unknown> {
  return {
    ...cluster.settings(),
    keycloak: { ...(cluster.settings().keycloak as object), resilience: { token_grace_period_hours: 1 } },
    session: { idle_timeout_minutes: 600, after_grace: afterGrace }
  }
}

t.test('two concurrent requests needing a refresh make exactly one refresh call', async (t) => {
  const { cluster, clock, gatehouse, browser } = await signedIn(t, 'alice')
  const before = cluster.upstream.requests.at(-1)?.headers['x-auth-request-access-token']
  clock.advance(301_000)
  cluster.standin.resetCounts()
  const [a, b] = await Promise.all([browser.get(`${gatehouse.proxyUrl}/one`), browser.get(`${gatehouse.proxyUrl}/two`)])
  t.equal(a.status, 200)
  t.equal(b.status, 200)
  t.equal(cluster.standin.grantCount('refresh_token'), 1, 'one refresh for two requests')
  t.equal(cluster.upstream.requests.at(-1)?.headers['x-auth-request-mode'], 'keycloak')
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_token_refresh_total\{result="success"\} 1/)
  t.equal(before, undefined, 'access tokens are not passed to the app unless configured')
  // The rotated refresh token works again later: the old one was never sent twice.
  clock.advance(301_000)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 'keycloak')
  t.equal(cluster.standin.grantCount('refresh_token'), 2)
})

t.test('the background loop refreshes tokens inside the refresh window', async (t) => {
  const cluster = await startCluster(t, 1)
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), session: { refresh_window_seconds: 120 } }), { clock })
  await gatehouse.started
  await ssoLogin(new BrowserClient(), gatehouse.proxyUrl, 'bob', 'bob-password')
  t.equal(await gatehouse.app.sessions.refreshDue(), 0, 'nothing due yet')
  clock.advance(200_000)
  t.equal(await gatehouse.app.sessions.refreshDue(), 1)
  t.equal(cluster.standin.grantCount('refresh_token'), 1)
})

t.test('an outage: the session goes on in mode cached inside the grace period, and not after it', async (t) => {
  const { cluster, clock, gatehouse, browser, server } = await signedIn(t, 'alice', (c) => graceSettings(c, 'login'))
  await takeKeycloakDown(server, gatehouse.app)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 'keycloak', 'a fresh access token needs no Keycloak')
  clock.advance(10 * 60_000)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 'cached', 'expired token, Keycloak away: cached')
  t.equal((await gatehouse.app.status()).sessions.cached_tokens, 1)
  t.equal(gatehouse.app.mode.mode, 'degraded')
  clock.advance(51 * 60_000)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 302, 'past the grace period: log in again')
  t.equal(new SessionsRepository(gatehouse.db).list({ includeEnded: true })[0]?.endReason, 'grace_expired')
})

t.test('after_grace: local keeps an allowed user signed in, in mode local', async (t) => {
  const { cluster, clock, gatehouse, browser, server } = await signedIn(t, 'alice', (c) => graceSettings(c, 'local'))
  await takeKeycloakDown(server, gatehouse.app)
  clock.advance(2 * 3_600_000)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 'local')
})

t.test('invalid_grant ends the Keycloak part: an SSO-only session must log in again', async (t) => {
  const { cluster, clock, gatehouse, browser } = await signedIn(t, 'bob')
  // Keycloak forgets the session (an admin logged the user out; no back-channel URL configured).
  await cluster.standin.logoutUser('bob')
  clock.advance(301_000)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 302)
  t.match(await (await fetch(`${gatehouse.adminUrl}/metrics`)).text(), /gatehouse_token_refresh_total\{result="invalid_grant"\} 1/)
})

t.test('back-channel logout from the stand-in ends the session at once; a forged token is 400 and ends nothing', async (t) => {
  const port = await freePort()
  const cluster = await startCluster(t, 1, {
    clients: [{ clientId: DEFAULT_CLIENT_ID, secret: DEFAULT_CLIENT_SECRET, redirectUris: ['*'], backchannelLogoutUri: `http://127.0.0.1:${port}/_gatehouse/backchannel-logout` }]
  })
  const log = captureLog()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), server: { port } }), { log })
  await gatehouse.started
  const alice = new BrowserClient()
  const bob = new BrowserClient()
  await ssoLogin(alice, gatehouse.proxyUrl, 'alice', 'alice-password')
  await ssoLogin(bob, gatehouse.proxyUrl, 'bob', 'bob-password')

  const forged = await cluster.standin.mintLogoutToken({ sub: cluster.standin.user('alice').sub }, { key: await generateSigningKey('RS256') })
  const res = await fetch(`${gatehouse.proxyUrl}/_gatehouse/backchannel-logout`, { method: 'POST', body: new URLSearchParams({ logout_token: forged }) })
  t.equal(res.status, 400)
  t.match(log.text(), 'back-channel logout token refused')
  t.equal(await modeOf(alice, gatehouse.proxyUrl, cluster.upstream), 'keycloak', 'the forged token ended nothing')

  const deliveries = await cluster.standin.logoutUser('alice')
  t.equal(deliveries.length, 1)
  t.equal(deliveries[0]?.status, 200, 'Gatehouse answered the stand-in 200')
  t.equal(await modeOf(alice, gatehouse.proxyUrl, cluster.upstream), 302, 'alice must log in again')
  t.equal(await modeOf(bob, gatehouse.proxyUrl, cluster.upstream), 'keycloak', 'bob is untouched')
})

t.test('logout: RP-initiated while Keycloak is up; queued while it is down', async (t) => {
  const cluster = await startCluster(t, 1)
  const [server] = cluster.servers
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()))
  await gatehouse.started
  const browser = new BrowserClient()
  await ssoLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')
  const confirm = await browser.get(`${gatehouse.proxyUrl}/_gatehouse/logout?rd=%2Fbye`)
  t.equal(confirm.status, 200)
  t.match(confirm.body, 'Do you want to sign out?')
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 'keycloak', 'GET alone signs nobody out')
  const out = await browser.submit(confirm, {}, { follow: false })
  t.equal(out.status, 303)
  const endSession = new URL(out.headers.location as string)
  t.equal(endSession.origin + endSession.pathname, `${cluster.standin.issuer}/protocol/openid-connect/logout`)
  t.ok(endSession.searchParams.get('id_token_hint'))
  t.equal(endSession.searchParams.get('post_logout_redirect_uri'), `${gatehouse.proxyUrl}/bye`)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, cluster.upstream), 302, 'the local session ended')

  const second = new BrowserClient()
  await ssoLogin(second, gatehouse.proxyUrl, 'bob', 'bob-password')
  await takeKeycloakDown(server!, gatehouse.app)
  const page = await second.get(`${gatehouse.proxyUrl}/_gatehouse/logout`)
  const queued = await second.submit(page, {}, { follow: false })
  t.equal(queued.status, 303)
  t.equal(queued.headers.location, '/')
  const items = new SyncQueueRepository(gatehouse.db, new KeyRing(TEST_SECRETS.encryption_keys)).list('pending')
  t.match(items, [{ operation: 'logout_user', username: 'bob', payload: { keycloak_id: cluster.standin.user('bob').sub } }])
  t.equal(await modeOf(second, gatehouse.proxyUrl, cluster.upstream), 302)
})

t.test('the database file holds no token, password or session secret in plain text; nor do the logs', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  const log = captureLog()
  const gatehouse = await startGatehouse(t, writeConfig(dir, { ...cluster.settings(), log: { level: 'debug' } }), { log })
  await gatehouse.started
  const browser = new BrowserClient()
  await ssoLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')
  await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'bob', 'bob-password')
  await formLogin(new BrowserClient(), gatehouse.proxyUrl, 'bob', 'bob-wrong-password')
  const tokens = new TokenCacheRepository(gatehouse.db, new KeyRing(TEST_SECRETS.encryption_keys))
  const sessions = new SessionsRepository(gatehouse.db).list()
  t.equal(sessions.length, 2)
  const secrets = ['alice-password', 'bob-password', 'bob-wrong-password', browser.cookie(gatehouse.proxyUrl, 'gatehouse_session')?.value as string]
  for (const s of sessions) {
    const cached = tokens.get(s.id)
    t.ok(cached?.refreshToken, 'a refresh token is cached')
    secrets.push(cached?.refreshToken as string, cached?.accessToken as string)
    if (cached?.idToken != null) secrets.push(cached.idToken)
  }
  const sessionSecret = decodeURIComponent(secrets[3] as string).split('.')[0] as string
  secrets.push(sessionSecret)
  const file = join(dir, 'gatehouse.db')
  const bytes = Buffer.concat([readFileSync(file), existsSync(`${file}-wal`) ? readFileSync(`${file}-wal`) : Buffer.alloc(0)])
  t.ok(bytes.length > 0)
  for (const secret of secrets) {
    t.equal(bytes.indexOf(Buffer.from(secret.slice(0, 40))), -1, `not in the database: ${secret.slice(0, 6)}…`)
    t.notMatch(log.text(), secret.slice(0, 40), `not in the logs: ${secret.slice(0, 6)}…`)
  }
})

t.test('sessions end after the idle timeout and at the absolute lifetime; last-seen writes are batched', async (t) => {
  const cluster = await startCluster(t, 1)
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), session: { idle_timeout_minutes: 30, absolute_timeout_hours: 1 } }), { clock })
  await gatehouse.started
  const repo = new SessionsRepository(gatehouse.db)

  const idle = new BrowserClient()
  await formLogin(idle, gatehouse.proxyUrl, 'bob', 'bob-password')
  const created = repo.list()[0]
  clock.advance(10 * 60_000)
  t.equal(await modeOf(idle, gatehouse.proxyUrl, cluster.upstream), 'keycloak')
  t.equal(repo.find(created!.id)?.lastSeenAt, created?.lastSeenAt, 'a request does not write last_seen at once')
  await gatehouse.app.sessions.flushTouches()
  t.equal(repo.find(created!.id)?.lastSeenAt, clock.now(), 'the batch writes it')
  clock.advance(31 * 60_000)
  t.equal(await modeOf(idle, gatehouse.proxyUrl, cluster.upstream), 302, 'idle too long')
  t.equal(repo.find(created!.id)?.endReason, 'idle')

  const busy = new BrowserClient()
  await formLogin(busy, gatehouse.proxyUrl, 'alice', 'alice-password')
  for (let i = 0; i < 3; i++) {
    clock.advance(20 * 60_000)
    t.equal(await modeOf(busy, gatehouse.proxyUrl, cluster.upstream), i < 2 ? 'keycloak' : 302, `after ${(i + 1) * 20} minutes`)
  }
  t.equal(repo.list({ username: 'alice', includeEnded: true })[0]?.endReason, 'expired', 'the absolute lifetime ends even a busy session')
})
