// Issue 14 item 1: Redis with ACL users, as a shared Redis runs them. The configured user and
// password are the ones Gatehouse logs in with; a wrong password is an outage (SQLite carries
// on, status says why); a user without the commands the store needs is ERR_STORE_REDIS, loud,
// not a silent fall to SQLite.
import t from 'tap'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { startReplicas } from '../fixtures/replicas.ts'
import { formLogin } from '../fixtures/sessions.ts'

const storeOf = async (adminUrl: string): Promise<{ mode: string, reason: string | null }> => ((await (await fetch(`${adminUrl}/status`)).json()) as { store: { mode: string, reason: string | null } }).store
const login = async (url: string): Promise<number> => (await formLogin(new BrowserClient(), url, 'alice', 'alice-password', '/hello', false)).status

t.test('an ACL user: the configured user and password are the ones Gatehouse authenticates with', async (t) => {
  const replicas = await startReplicas(t, 1, {}, (r) => {
    return { url: r.url, username: 'gatehouse-app', password: 'acl-pass-for-the-app' }
  }, async (r) => {
    await r.command('ACL', 'SETUSER', 'gatehouse-app', 'on', '>acl-pass-for-the-app', '~app:*', '&app:*', '+@all')
  })
  if (replicas === null) return
  const [a] = replicas.sidecars
  t.equal(await login(a!.proxyUrl), 303, 'a login')
  t.match(await storeOf(a!.adminUrl), { mode: 'normal' })
  t.match(await replicas.redis.command('CLIENT', 'LIST'), /user=gatehouse-app/, 'connected as the ACL user')
  t.match(await replicas.redis.command('KEYS', 'app:session:*'), 'app:session:', 'the session is in Redis')
})

t.test('a wrong password: Redis is treated as unreachable, SQLite carries on, and status says why', async (t) => {
  const replicas = await startReplicas(t, 1, {}, (r) => ({ url: r.url, username: 'gatehouse-app', password: 'not-the-acl-password', connect_timeout_ms: 300 }), async (r) => {
    await r.command('ACL', 'SETUSER', 'gatehouse-app', 'on', '>acl-pass-for-the-app', '~app:*', '&app:*', '+@all')
  })
  if (replicas === null) return
  const [a] = replicas.sidecars
  t.equal(await login(a!.proxyUrl), 303, 'a login lands in SQLite')
  const store = await storeOf(a!.adminUrl)
  t.equal(store.mode, 'degraded')
  t.match(store.reason, /WRONGPASS/, 'the reason names the refusal')
  t.notMatch(store.reason, 'not-the-acl-password', 'never the password')
})

t.test('a user without scripting: ERR_STORE_REDIS, a 500, and the store is not taken for down', async (t) => {
  const replicas = await startReplicas(t, 1, {}, (r) => ({ url: r.url, username: 'no-scripts', password: 'acl-pass-no-scripts' }), async (r) => {
    await r.command('ACL', 'SETUSER', 'no-scripts', 'on', '>acl-pass-no-scripts', '~app:*', '&app:*', '+@all', '-@scripting')
  })
  if (replicas === null) return
  const [a] = replicas.sidecars
  t.equal(await login(a!.proxyUrl), 500, 'the login cannot be stored where it must be')
  t.match(a!.log.text(), /ERR_STORE_REDIS/)
  t.match(a!.log.text(), /NOPERM/)
  const store = await storeOf(a!.adminUrl)
  t.equal(store.mode, 'degraded', '/status still answers, and says so')
  t.match(store.reason, /^redis refused a command \(ERR_STORE_REDIS\): NOPERM/, 'a refusal, not an outage')
  const metrics = await (await fetch(`${a!.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_store_mode\{store="redis",mode="degraded"\} 1/)
  t.equal(a!.log.entries().filter((e) => e.msg === 'redis refused a session-store command').length, 1, 'logged once, at error')
  t.equal(a!.log.entries().filter((e) => e.msg === 'redis unreachable: sessions carry on from sqlite').length, 0, 'the circuit did not open')
})
