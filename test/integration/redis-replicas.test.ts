// Issue 14: three sidecars of one app, each with its own SQLite file, sharing one real
// redis-server on loopback: one set of sessions, revocations, lockout counters and refresh lock.
import t from 'tap'
import { runCli } from '../../src/cli/run.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { formLogin, modeOf, ssoLogin } from '../fixtures/sessions.ts'
import { sharedBrowser, startReplicas, within } from '../fixtures/replicas.ts'

const status = async (browser: BrowserClient, url: string): Promise<number> => (await browser.get(`${url}/hello`, { follow: false })).status

t.test('a login on A is valid on B and C; a logout on B is refused on A and C within 1 s', async (t) => {
  const replicas = await startReplicas(t, 3)
  if (replicas === null) return
  const [a, b, c] = replicas.sidecars
  const { upstream } = replicas.cluster
  const alice = new BrowserClient()
  await ssoLogin(alice, a!.proxyUrl, 'alice', 'alice-password')
  const [onA, onB, onC] = sharedBrowser(alice, a!.proxyUrl, [a!.proxyUrl, b!.proxyUrl, c!.proxyUrl])
  t.equal(await modeOf(onA!, a!.proxyUrl, upstream), 'keycloak')
  t.equal(await modeOf(onB!, b!.proxyUrl, upstream), 'keycloak', 'B knows the session')
  t.equal(await modeOf(onC!, c!.proxyUrl, upstream), 'keycloak', 'C knows the session')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-preferred-username'], 'alice')

  const confirm = await onB!.get(`${b!.proxyUrl}/_gatehouse/logout`)
  const out = await onB!.submit(confirm, {}, { follow: false })
  t.equal(out.status, 303, 'signed out on B')
  const seen = upstream.requests.length
  t.ok(await within(1000, async () => await status(onA!, a!.proxyUrl) === 302 && await status(onC!, c!.proxyUrl) === 302), 'refused on A and C within 1 s')
  t.equal(upstream.requests.length, seen, 'the app got no request for the ended session')
  t.equal(await status(onB!, b!.proxyUrl), 302)
})

t.test('sessions logout-user (CLI beside A) and users disable reach every replica within 1 s', async (t) => {
  const replicas = await startReplicas(t, 3, { auth: { primary: 'local' } })
  if (replicas === null) return
  const [a, b, c] = replicas.sidecars
  const urls = replicas.sidecars.map((s) => s.proxyUrl)
  const bob = new BrowserClient()
  await ssoLogin(bob, c!.proxyUrl, 'bob', 'bob-password')
  const bobs = sharedBrowser(bob, c!.proxyUrl, urls)
  for (const [i, browser] of bobs.entries()) t.equal(await status(browser, urls[i]!), 200, `bob on replica ${i}`)

  const lines: string[] = []
  const code = await runCli(['sessions', 'logout-user', 'bob', '-c', a!.configPath, '--json'], { env: {}, output: { out: (l) => lines.push(l), err: (l) => lines.push(l) } })
  t.equal(code, 0, lines.join('\n'))
  t.equal((JSON.parse(lines[0] as string) as { ended_sessions: string[] }).ended_sessions.length, 1)
  t.ok(await within(1000, async () => (await Promise.all(bobs.map((browser, i) => status(browser, urls[i]!)))).every((s) => s === 302)), 'refused everywhere within 1 s')

  // users disable: a local user signed in on B.
  const { addLocalUser } = await import('../fixtures/sessions.ts')
  await addLocalUser(b!.db, 'erin', 'erin-local-password')
  const erin = new BrowserClient()
  t.equal((await formLogin(erin, b!.proxyUrl, 'erin', 'erin-local-password')).status, 200)
  const erins = sharedBrowser(erin, b!.proxyUrl, urls)
  for (const [i, browser] of erins.entries()) t.equal(await status(browser, urls[i]!), 200, `erin on replica ${i}`)
  const disabled = await runCli(['users', 'disable', 'erin', '-c', b!.configPath], { env: {}, output: { out: (l) => lines.push(l), err: (l) => lines.push(l) } })
  t.equal(disabled, 0, lines.join('\n'))
  t.ok(await within(1000, async () => (await Promise.all(erins.map((browser, i) => status(browser, urls[i]!)))).every((s) => s === 302)), 'disabled everywhere within 1 s')
})

t.test('a back-channel logout received by C and sessions invalidate beside B reach every replica within 1 s', async (t) => {
  const replicas = await startReplicas(t, 3)
  if (replicas === null) return
  const [a, b, c] = replicas.sidecars
  const { standin } = replicas.cluster
  const urls = replicas.sidecars.map((s) => s.proxyUrl)
  const alice = new BrowserClient()
  await ssoLogin(alice, a!.proxyUrl, 'alice', 'alice-password')
  const alices = sharedBrowser(alice, a!.proxyUrl, urls)
  for (const [i, browser] of alices.entries()) t.equal(await status(browser, urls[i]!), 200, `alice on replica ${i}`)
  const sid = standin.sessions('alice')[0]?.sid
  t.ok(sid, 'the stand-in has alice\'s Keycloak session')
  // Keycloak posts to one replica only (the load balancer picks C): the others hear it through Redis.
  const token = await standin.mintLogoutToken({}, { username: 'alice', ...(sid !== undefined ? { sid } : {}) })
  const res = await fetch(`${c!.proxyUrl}/_gatehouse/backchannel-logout`, { method: 'POST', body: new URLSearchParams({ logout_token: token }) })
  t.equal(res.status, 200, 'C accepted the logout token')
  t.ok(await within(1000, async () => (await Promise.all(alices.map((browser, i) => status(browser, urls[i]!)))).every((s) => s === 302)), 'refused on A, B and C within 1 s')

  const bob = new BrowserClient()
  await ssoLogin(bob, a!.proxyUrl, 'bob', 'bob-password')
  const bobs = sharedBrowser(bob, a!.proxyUrl, urls)
  for (const [i, browser] of bobs.entries()) t.equal(await status(browser, urls[i]!), 200, `bob on replica ${i}`)
  const [session] = await b!.app.sessions.store.list({ username: 'bob' })
  const lines: string[] = []
  const code = await runCli(['sessions', 'invalidate', session!.id, '-c', b!.configPath], { env: {}, output: { out: (l) => lines.push(l), err: (l) => lines.push(l) } })
  t.equal(code, 0, lines.join('\n'))
  t.ok(await within(1000, async () => (await Promise.all(bobs.map((browser, i) => status(browser, urls[i]!)))).every((s) => s === 302)), 'invalidated everywhere within 1 s')
})

t.test('failed logins spread over the three lock the user after max_failed_attempts in all', async (t) => {
  const replicas = await startReplicas(t, 3, { security: { max_failed_attempts: 3 } })
  if (replicas === null) return
  const [a, b, c] = replicas.sidecars
  for (const sidecar of [a!, b!, c!]) {
    const page = await formLogin(new BrowserClient(), sidecar.proxyUrl, 'alice', 'not-alice-password', '/hello', false)
    t.equal(page.status, 401, 'a wrong password')
  }
  for (const sidecar of [a!, b!, c!]) {
    const page = await formLogin(new BrowserClient(), sidecar.proxyUrl, 'alice', 'alice-password', '/hello', false)
    t.equal(page.status, 429, 'locked, even with the right password')
    t.ok(Number(page.headers['retry-after']) > 0)
  }
})

t.test('30 concurrent requests on an expiring session, spread over the three, make one refresh', async (t) => {
  const replicas = await startReplicas(t, 3)
  if (replicas === null) return
  const { cluster, clock } = replicas
  const urls = replicas.sidecars.map((s) => s.proxyUrl)
  const alice = new BrowserClient()
  await ssoLogin(alice, urls[0]!, 'alice', 'alice-password')
  const browsers = sharedBrowser(alice, urls[0]!, urls)
  // Every replica has the session in memory before it expires.
  for (const [i, browser] of browsers.entries()) t.equal(await status(browser, urls[i]!), 200)
  clock.advance(301_000)
  cluster.standin.resetCounts()
  const answers = await Promise.all(Array.from({ length: 30 }, async (_, i) => await status(browsers[i % 3]!, urls[i % 3]!)))
  t.same(answers, Array(30).fill(200), 'every request let through')
  t.equal(cluster.standin.grantCount('refresh_token'), 1, 'one refresh in all')
  // The rotated refresh token is the one every replica uses next: it was never sent twice.
  clock.advance(301_000)
  t.equal(await modeOf(browsers[1]!, urls[1]!, cluster.upstream), 'keycloak')
  t.equal(cluster.standin.grantCount('refresh_token'), 2)
})

t.test('the background refresh loops of the three, run at once, make one refresh', async (t) => {
  const replicas = await startReplicas(t, 3, { session: { refresh_window_seconds: 120 } })
  if (replicas === null) return
  const { cluster, clock, sidecars } = replicas
  const urls = sidecars.map((s) => s.proxyUrl)
  const alice = new BrowserClient()
  await ssoLogin(alice, urls[0]!, 'alice', 'alice-password')
  const browsers = sharedBrowser(alice, urls[0]!, urls)
  for (const [i, browser] of browsers.entries()) t.equal(await status(browser, urls[i]!), 200)
  clock.advance(200_000)
  cluster.standin.resetCounts()
  const refreshed = await Promise.all(sidecars.map(async (s) => await s.app.sessions.refreshDue()))
  t.equal(cluster.standin.grantCount('refresh_token'), 1, 'one refresh token grant in all')
  t.same(refreshed, [1, 1, 1], 'each loop ends with the session\'s tokens fresh (one refreshed, the others used what it stored)')
  t.equal(await modeOf(browsers[2]!, urls[2]!, cluster.upstream), 'keycloak')
  t.equal(cluster.standin.grantCount('refresh_token'), 1, 'and nobody refreshes again on the next request')
})
