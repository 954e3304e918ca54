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
  const back = await within(10_000, async () => (await storeOf(a!.adminUrl)).mode === 'normal' && (await storeOf(b!.adminUrl)).mode === 'normal' && (await storeOf(a!.adminUrl)).pending_replay === 0 && (await storeOf(b!.adminUrl)).pending_replay === 0)
  t.ok(back, 'both back to normal, nothing left to replay', { a: await (await fetch(`${a!.adminUrl}/status`)).json(), b: await (await fetch(`${b!.adminUrl}/status`)).json() })
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

t.test('Redis black-holed: commands time out at the deadline, the circuit opens once, SQLite carries on; status says so', async (t) => {
  const { runCli } = await import('../../src/cli/run.ts')
  const replicas = await startReplicas(t, 1, {}, (r) => ({ url: r.url, command_timeout_ms: 200, connect_timeout_ms: 300, failure_threshold: 2, cooldown_seconds: 60 }))
  if (replicas === null) return
  const { redis } = replicas
  const [a] = replicas.sidecars
  const alice = new BrowserClient()
  await ssoLogin(alice, a!.proxyUrl, 'alice', 'alice-password')

  // SIGSTOP: the connection stays up and the kernel takes the bytes, but nothing answers (a
  // black hole, as a Redis stalled by a fork or a swap storm, or a silent partition).
  process.kill(redis.pid!, 'SIGSTOP')
  t.teardown(() => { if (redis.pid !== null) process.kill(redis.pid, 'SIGCONT') })
  // Logins: a store write waits at most the deadline, until the circuit opens; then none waits.
  const answers: number[] = []
  for (let i = 0; i < 4; i++) answers.push((await formLogin(new BrowserClient(), a!.proxyUrl, 'bob', 'bob-password')).status)
  t.same(answers, [200, 200, 200, 200], 'logins land in SQLite')
  t.equal(await status(alice, a!.proxyUrl), 200, 'the session seen before carries on')
  // The deadline is what failed the commands (the socket never closed), and the circuit opened
  // once: the logins after it did not wait on Redis at all.
  const opened = a!.log.entries().filter((e) => e.msg === 'redis unreachable: sessions carry on from sqlite')
  t.equal(opened.length, 1, 'the circuit opened once, logged once at warn')
  t.equal(opened[0]?.kind, 'timeout', 'on commands that ran into the deadline')
  const report = (await (await fetch(`${a!.adminUrl}/status`)).json()) as { store: { sessions: string, mode: string, reason: string, pending_replay: number } }
  t.match(report.store, { sessions: 'redis', mode: 'degraded', reason: /^redis unreachable: Command timed out/ })
  t.ok(report.store.pending_replay >= 4, 'the new sessions wait for replay')
  t.match((await (await fetch(`${a!.adminUrl}/status.html`)).text()), /Session store<\/dt><dd id="store">redis · <span class="badge t-warn">degraded<\/span>/)
  const metrics = await (await fetch(`${a!.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_store_mode\{store="redis",mode="degraded"\} 1/)
  // `gatehouse status` beside it (the admin port is 0, so it reads the file and asks Redis
  // itself, waiting connect_timeout_ms at most): degraded, exit code 3, with Keycloak fine.
  const lines: string[] = []
  const code = await runCli(['status', '-c', a!.configPath], { env: {}, output: { out: (l) => lines.push(l), err: (l) => lines.push(l) } })
  t.equal(code, 3, lines.join('\n'))
  t.match(lines.join('\n'), /mode: {6}normal/)
  t.match(lines.join('\n'), /store: {5}redis degraded \(redis unreachable/)

  // Back: the connection never dropped, so no reconnect closes the circuit; its probe, due once
  // the cooldown has passed (on the injected clock), does.
  process.kill(redis.pid!, 'SIGCONT')
  replicas.clock.advance(60_000)
  t.ok(await within(10_000, async () => (await storeOf(a!.adminUrl)).mode === 'normal' && (await storeOf(a!.adminUrl)).pending_replay === 0), 'back, and replayed')
  const normal: string[] = []
  t.equal(await runCli(['status', '-c', a!.configPath], { env: {}, output: { out: (l) => normal.push(l), err: (l) => normal.push(l) } }), 0, normal.join('\n'))
  t.match(normal.join('\n'), /store: {5}redis normal/)
})
