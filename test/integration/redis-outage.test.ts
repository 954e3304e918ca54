// Issue 14 item 4: Redis killed (SIGKILL) under load. No request waits on it; sessions carry on
// from each sidecar's SQLite copy, logins land in SQLite, a revocation made meanwhile is kept
// and replayed, and Redis (back empty: no persistence) gets every live session again.
import t from 'tap'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { startSentinel } from '../fixtures/redis.ts'
import { sharedBrowser, startReplicas, within } from '../fixtures/replicas.ts'
import { formLogin, ssoLogin } from '../fixtures/sessions.ts'

const status = async (browser: BrowserClient, url: string): Promise<number> => (await browser.get(`${url}/hello`, { follow: false })).status
const storeOf = async (adminUrl: string): Promise<{ mode: string, pending_replay: number }> => ((await (await fetch(`${adminUrl}/status`)).json()) as { store: { mode: string, pending_replay: number } }).store

t.test('Redis killed during load: no failed request, logins work, a revocation made meanwhile holds everywhere after', async (t) => {
  const replicas = await startReplicas(t, 2)
  if (replicas === null) return
  const { redis } = replicas
  const [a, b] = replicas.sidecars
  const urls = [a!.proxyUrl, b!.proxyUrl]
  const alice = new BrowserClient()
  await ssoLogin(alice, urls[0]!, 'alice', 'alice-password')
  const alices = sharedBrowser(alice, urls[0]!, urls)
  const bob = new BrowserClient()
  await ssoLogin(bob, urls[1]!, 'bob', 'bob-password')
  const bobs = sharedBrowser(bob, urls[1]!, urls)
  for (const [i, url] of urls.entries()) {
    t.equal(await status(alices[i]!, url), 200)
    t.equal(await status(bobs[i]!, url), 200)
  }

  // Load: alice's requests on both replicas, without pause, until told to stop.
  let stop = false
  const answers: number[] = []
  const load = Promise.all(urls.map(async (url, i) => {
    while (!stop) answers.push(await status(alices[i]!, url))
  }))
  const during = async (fn: () => Promise<void>): Promise<void> => {
    const before = answers.length
    await fn()
    await within(5000, async () => answers.length > before + 20)
  }

  await during(async () => { await redis.kill() })
  t.ok(await within(5000, async () => (await storeOf(a!.adminUrl)).mode === 'degraded'), 'A reports the store degraded')
  const metrics = await (await fetch(`${a!.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_store_mode\{store="redis",mode="degraded"\} 1/)
  t.match(metrics, /gatehouse_store_mode\{store="redis",mode="normal"\} 0/)

  // A login during the outage lands in B's SQLite.
  const carol = new BrowserClient()
  const landed = await formLogin(carol, urls[1]!, 'alice', 'alice-password')
  t.equal(landed.status, 200, 'a login works while Redis is down')
  // bob signs out on A while Redis is down: A refuses him at once; B cannot know yet.
  await during(async () => {
    const confirm = await bobs[0]!.get(`${urls[0]}/_gatehouse/logout`)
    t.equal((await bobs[0]!.submit(confirm, {}, { follow: false })).status, 303)
  })
  t.equal(await status(bobs[0]!, urls[0]!), 302, 'A refuses bob at once')
  t.ok((await storeOf(a!.adminUrl)).pending_replay > 0, 'the revocation waits for replay')

  await during(async () => { await redis.restart() })
  t.ok(await within(10_000, async () => (await storeOf(a!.adminUrl)).mode === 'normal' && (await storeOf(b!.adminUrl)).mode === 'normal' && (await storeOf(a!.adminUrl)).pending_replay === 0 && (await storeOf(b!.adminUrl)).pending_replay === 0), 'both back to normal, nothing left to replay')
  t.ok(await within(1000, async () => await status(bobs[1]!, urls[1]!) === 302), 'B refuses bob once Redis is back')
  t.equal(await status(bobs[0]!, urls[0]!), 302, 'and A still does')
  await during(async () => {})
  stop = true
  await load
  t.ok(answers.length > 60, `${answers.length} requests under load`)
  t.same(answers.filter((s) => s !== 200), [], 'zero failed requests for the valid session')

  // The session made during the outage reached Redis: A, which never saw it, lets it in.
  const carols = sharedBrowser(carol, urls[1]!, urls)
  t.equal(await status(carols[0]!, urls[0]!), 200, 'the outage login is valid on A after reconciliation')
  const keys = await redis.command('KEYS', 'app:session:*')
  t.equal((keys.match(/app:session:/g) ?? []).length, 2, 'Redis, restarted empty, holds the two live sessions again (alice\'s and the outage login), not bob\'s')
  t.match(await redis.command('ZRANGE', 'app:revoked', '0', '-1'), /[0-9a-f-]{36}/, 'and the revocation made during the outage')
})

t.test('Sentinel failover: kill the primary, and sessions keep working through the promoted replica', async (t) => {
  const sentinel = await startSentinel(t)
  if (sentinel === null) return
  const replicas = await startReplicas(t, 2, {}, () => ({ sentinels: [{ host: '127.0.0.1', port: sentinel.sentinelPort }], name: sentinel.name }))
  if (replicas === null) return
  const [a, b] = replicas.sidecars
  const urls = [a!.proxyUrl, b!.proxyUrl]
  const alice = new BrowserClient()
  await ssoLogin(alice, urls[0]!, 'alice', 'alice-password')
  const alices = sharedBrowser(alice, urls[0]!, urls)
  t.equal(await status(alices[1]!, urls[1]!), 200, 'B reads the session from the primary')
  t.match(await sentinel.primary.command('KEYS', 'app:session:*'), 'app:session:', 'kept on the primary')

  await sentinel.primary.kill()
  await sentinel.waitForPrimary(sentinel.replica.port)
  for (const [i, url] of urls.entries()) t.equal(await status(alices[i]!, url), 200, `alice on replica ${i} during and after the failover`)
  t.ok(await within(10_000, async () => (await storeOf(a!.adminUrl)).mode === 'normal' && (await storeOf(b!.adminUrl)).mode === 'normal'), 'both replicas on the new primary')
  // A login after the failover is in the promoted replica, and B (which never saw it) lets it in.
  const bob = new BrowserClient()
  await ssoLogin(bob, urls[0]!, 'bob', 'bob-password')
  const bobs = sharedBrowser(bob, urls[0]!, urls)
  t.equal(await status(bobs[1]!, urls[1]!), 200, 'a login after the failover is valid on the other replica')
  t.ok((await sentinel.replica.command('KEYS', 'app:session:*')).split('app:session:').length - 1 >= 2, 'both sessions are on the new primary')
})

t.test('Redis black-holed: no request waits past the deadline twice; the circuit opens and SQLite carries on; status says so', async (t) => {
  const { startRedis } = await import('../fixtures/redis.ts')
  const { startFaultProxy } = await import('../fixtures/fault-proxy.ts')
  const { runCli } = await import('../../src/cli/run.ts')
  const server = await startRedis(t)
  if (server === null) return
  const fault = await startFaultProxy({ target: { host: '127.0.0.1', port: server.port } })
  t.teardown(() => fault.close())
  const replicas = await startReplicas(t, 1, {}, () => ({ url: `redis://127.0.0.1:${fault.port}`, command_timeout_ms: 200, failure_threshold: 2, cooldown_seconds: 60 }))
  if (replicas === null) return
  const [a] = replicas.sidecars
  const alice = new BrowserClient()
  await ssoLogin(alice, a!.proxyUrl, 'alice', 'alice-password')

  await fault.setMode('blackhole')
  // Logins: each store write waits at most the deadline, until the circuit opens; then none waits.
  const answers: number[] = []
  for (let i = 0; i < 4; i++) answers.push((await formLogin(new BrowserClient(), a!.proxyUrl, 'bob', 'bob-password')).status)
  t.same(answers, [200, 200, 200, 200], 'logins land in SQLite')
  t.equal(await status(alice, a!.proxyUrl), 200, 'the session seen before carries on')
  const report = (await (await fetch(`${a!.adminUrl}/status`)).json()) as { store: { sessions: string, mode: string, reason: string, pending_replay: number } }
  t.match(report.store, { sessions: 'redis', mode: 'degraded' })
  t.ok(report.store.pending_replay >= 4, 'the new sessions wait for replay')
  t.match((await (await fetch(`${a!.adminUrl}/status.html`)).text()), /Session store<\/dt><dd>redis · <strong>degraded<\/strong>/)
  // `gatehouse status` beside it (the admin port is 0, so it reads the file and asks Redis itself).
  const lines: string[] = []
  const code = await runCli(['status', '-c', a!.configPath], { env: {}, output: { out: (l) => lines.push(l), err: (l) => lines.push(l) } })
  t.not(code, 1, lines.join('\n'))
  t.match(lines.join('\n'), /store: {5}redis degraded \(redis unreachable/)

  await fault.setMode('pass')
  t.ok(await within(10_000, async () => (await storeOf(a!.adminUrl)).mode === 'normal' && (await storeOf(a!.adminUrl)).pending_replay === 0), 'back, and replayed')
})
