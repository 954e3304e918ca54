import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startCluster, type Cluster } from '../fixtures/cluster.ts'
import { captureLog, startGatehouse, TEST_SECRETS, writeConfig } from '../fixtures/gatehouse.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { manualClock, type ManualClock } from '../fixtures/clock.ts'
import { addLocalUser, formLogin, takeKeycloakDown } from '../fixtures/sessions.ts'
import { DEFAULT_USERS } from '../fixtures/keycloak-standin.ts'
import { runInProcess, startInProcess } from '../fixtures/cli.ts'
import { createKeycloakClient } from '../../src/keycloak/client.ts'
import { createMetrics } from '../../src/metrics/registry.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { openDatabase } from '../../src/store/db.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import { UsersRepository } from '../../src/store/users.ts'
import { createSync } from '../../src/sync/create.ts'
import type { Config } from '../../src/config/schema.ts'

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url))
const ring = new KeyRing(TEST_SECRETS.encryption_keys)
const PEOPLE = ['uma', 'vic', 'wes', 'xia', 'yan']

/** Five more realm users, each with a local twin of the same password (auth.primary local). */
async function fiveUsersCluster (t: Parameters<typeof startCluster>[0]): Promise<Cluster> {
  return await startCluster(t, 1, { users: [...DEFAULT_USERS, ...PEOPLE.map((u) => ({ username: u, password: `${u}-password`, email: `${u}@example.test`, firstName: u, lastName: 'Test' }))] })
}

function fileBytes (dir: string): Buffer {
  const file = join(dir, 'gatehouse.db')
  return Buffer.concat([readFileSync(file), existsSync(`${file}-wal`) ? readFileSync(`${file}-wal`) : Buffer.alloc(0)])
}

/** Brings Keycloak back: the fault is lifted, the cooldown passes, one health round closes the circuit. */
async function bringKeycloakBack (cluster: Cluster, clock: ManualClock, app: { keycloak: { health: { round: () => Promise<void> }, pool: { reachable: () => boolean } } }): Promise<void> {
  await cluster.servers[0]!.setMode('pass')
  clock.advance(61_000)
  await app.keycloak.health.round()
  if (!app.keycloak.pool.reachable()) throw new Error('keycloak still unreachable')
}

t.test('ten password changes for five users during an outage replay once each when Keycloak returns; the last one wins', async (t) => {
  const cluster = await fiveUsersCluster(t)
  const clock = manualClock()
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, { ...cluster.settings(), auth: { primary: 'local' }, session: { idle_timeout_minutes: 600 } }), { clock })
  await gatehouse.started
  for (const u of PEOPLE) await addLocalUser(gatehouse.db, u, `${u}-password`)
  await takeKeycloakDown(cluster.servers[0]!, gatehouse.app)
  cluster.standin.resetCounts()

  for (const u of PEOPLE) {
    const browser = new BrowserClient()
    t.equal((await formLogin(browser, gatehouse.proxyUrl, u, `${u}-password`)).status, 200)
    for (const [current, next] of [[`${u}-password`, 'first-new-secret-1'], ['first-new-secret-1', 'second-new-secret-2']] as const) {
      const res = await browser.submit(await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password`), { current, new: next, confirm: next })
      t.equal(res.status, 200, `${u}: ${next} accepted while Keycloak is down`)
    }
  }
  const queue = new SyncQueueRepository(gatehouse.db, ring)
  t.equal(queue.list('pending').length, 5, 'ten changes, one pending per user (the newer replaced the older)')
  t.equal(fileBytes(dir).indexOf(Buffer.from('second-new-secret-2')), -1, 'no queued password in the file before replay')
  t.equal(cluster.standin.adminCalls().length, 0, 'nothing reached Keycloak while it was down')

  await bringKeycloakBack(cluster, clock, gatehouse.app)
  const result = await gatehouse.app.sync.worker.cycle()
  t.match(result, { done: 5, failed: 0, dead: 0 })
  for (const u of PEOPLE) t.equal(cluster.standin.passwordOf(u), 'second-new-secret-2', `${u}: Keycloak ends with the last password`)
  t.equal(cluster.standin.adminCount('PUT', '/reset-password'), 5, 'each change reached Keycloak exactly once')
  t.same(queue.list().map((i) => [i.status, i.hasSecret]), PEOPLE.map(() => ['done', false]), 'done, passwords erased')
  t.equal(fileBytes(dir).indexOf(Buffer.from('second-new-secret-2')), -1, 'nor after')
  t.same((await gatehouse.app.sync.worker.cycle()).done, 0, 'a second cycle replays nothing')
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_sync_operations_total\{operation="password_change",result="done"\} 5/)
  t.match(metrics, /gatehouse_sync_queue_depth\{status="done"\} 5/)
  t.match((await gatehouse.app.status()).sync, { pending: 0, done: 5, failed: 0, dead: 0 })
})

t.test('a poison item dies after max_attempts while other users\' items keep flowing', async (t) => {
  const cluster = await startCluster(t, 1)
  const clock = manualClock()
  const log = captureLog()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), sync: { enabled: false, max_attempts: 2, backoff_base_seconds: 1 } }), { clock, log })
  await gatehouse.started
  const queue = new SyncQueueRepository(gatehouse.db, ring)
  // Nobody called ghost exists in Keycloak: every attempt is refused.
  const poison = queue.enqueue({ username: 'ghost', operation: 'password_change', payload: { keycloak_id: null }, secret: { password: 'ghost-secret-x' } }, clock.now())
  const good = queue.enqueue({ username: 'bob', operation: 'user_update', payload: { first_name: 'Robert' } }, clock.now())
  t.match(await gatehouse.app.sync.worker.cycle(), { done: 1, failed: 1 })
  t.equal(cluster.standin.user('bob').firstName, 'Robert')
  t.equal(queue.find(poison)?.status, 'failed')
  const later = queue.enqueue({ username: 'alice', operation: 'user_update', payload: { last_name: 'Adams' } }, clock.now())
  clock.advance(2_000)
  t.match(await gatehouse.app.sync.worker.cycle(), { done: 1, dead: 1 })
  t.equal(queue.find(poison)?.status, 'dead')
  t.equal(queue.find(poison)?.hasSecret, false, 'a dead item\'s password is erased')
  t.match(queue.find(poison)?.lastError, /no Keycloak user named ghost/)
  t.equal(queue.find(good)?.status, 'done')
  t.equal(queue.find(later)?.status, 'done')
  t.match(log.text(), 'sync item dead')
})

t.test('user_create for a user Keycloak already has ends done, linked to the existing id', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), sync: { enabled: false } }))
  await gatehouse.started
  await addLocalUser(gatehouse.db, 'alice', 'whatever-password')
  const queue = new SyncQueueRepository(gatehouse.db, ring)
  const id = queue.enqueue({ username: 'alice', operation: 'user_create', payload: { email: 'alice@example.test' } }, Date.now())
  t.match(await gatehouse.app.sync.worker.cycle(), { done: 1 })
  t.match(queue.find(id), { status: 'done', payload: { keycloak_id: cluster.standin.user('alice').sub, linked: true } })
  t.equal(new UsersRepository(gatehouse.db).find('alice')?.keycloakId, cluster.standin.user('alice').sub)
  t.equal(cluster.standin.adminCount('POST', '/users'), 1, 'one create, answered 409')
})

t.test('a worker killed in the middle of a batch loses nothing: after its lease another worker finishes', async (t) => {
  const cluster = await fiveUsersCluster(t)
  const dir = t.testdir()
  const config = writeConfig(dir, { ...cluster.settings(), sync: { enabled: false, lease_seconds: 30, batch_size: 10 }, log: { level: 'info' } })
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
  t.teardown(() => db.close())
  const queue = new SyncQueueRepository(db, ring)
  for (const u of PEOPLE) queue.enqueue({ username: u, operation: 'password_change', payload: { keycloak_id: null }, secret: { password: `${u}-after-crash` } }, Date.now())
  // Each Admin API answer takes a while, so the worker is surely mid-batch when it dies.
  await cluster.servers[0]!.setMode('delay', { delayMs: 150 })

  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'sync', 'start', '-c', join(dir, 'config.yaml')], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  t.teardown(() => { child.kill('SIGKILL') })
  await new Promise<void>((resolve, reject) => {
    const check = setInterval(() => {
      if (cluster.standin.adminCount('PUT', '/reset-password') >= 2) { clearInterval(check); resolve() }
    }, 10)
    child.once('exit', () => { clearInterval(check); reject(new Error('the worker exited early')) })
  })
  child.kill('SIGKILL')
  await exited
  const leased = queue.list('processing')
  t.ok(leased.length >= 1, `${leased.length} item(s) still leased by the dead worker`)
  t.ok(queue.list('done').length < PEOPLE.length, 'the batch was not finished')

  await cluster.servers[0]!.setMode('pass')
  const clock = manualClock(Date.now() + 31_000)
  const keycloak = createKeycloakClient(config as Config, { db, clock, log: captureLog().logger, metrics: createMetrics() })
  await keycloak.health.round()
  const { worker } = createSync(config, { db, ring, keycloak, clock, log: captureLog().logger, metrics: createMetrics() })
  await worker.cycle()
  t.same(queue.list().map((i) => i.status), PEOPLE.map(() => 'done'), 'every item done')
  for (const u of PEOPLE) t.equal(cluster.standin.passwordOf(u), `${u}-after-crash`, `${u}: the change is in Keycloak`)
  const resets = cluster.standin.adminCalls().filter((c) => c.method === 'PUT' && c.path.endsWith('/reset-password'))
  const perUser = new Map<string, number>()
  for (const c of resets) perUser.set(c.path, (perUser.get(c.path) ?? 0) + 1)
  t.equal(perUser.size, PEOPLE.length)
  t.ok([...perUser.values()].every((n) => n === 1 || n === 2), 'at most the item in flight at the kill was sent twice (same password: one change in effect)')
})

t.test('users migrate-to-keycloak: a dry run changes nothing; the run provisions each user once; a second run creates nothing', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  writeConfig(dir, { ...cluster.settings(), sync: { enabled: false } })
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
  t.teardown(() => db.close())
  for (const u of ['nora', 'omar', 'alice']) await addLocalUser(db, u, `${u}-local-password`, u === 'omar' ? ['ops'] : ['staff'])
  const cli = async (...args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> => await runInProcess(['users', 'migrate-to-keycloak', '-c', join(dir, 'config.yaml'), ...args])

  const dry = await cli('--dry-run')
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, 'nora: would create')
  t.match(dry.stdout, 'alice: would link')
  t.match(dry.stdout, 'dry run, nothing changed')
  t.equal(cluster.standin.adminCount('POST', '/users'), 0)
  t.equal(new SyncQueueRepository(db, ring).list().length, 0, 'nothing queued')

  const onlyOps = await cli('--role', 'ops', '--json')
  t.equal(onlyOps.code, 0, onlyOps.stderr)
  t.match(JSON.parse(onlyOps.stdout), { selected: 1, counts: { created: 1 } })

  const run = await cli()
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, '3 local users selected')
  for (const line of ['omar: already linked', 'alice: linked', 'nora: created', '1 already linked', '1 created', '1 linked']) t.match(run.stdout, line)
  const created = cluster.standin.users.find((u) => u.username === 'nora')
  t.ok(created, 'nora now exists in Keycloak')
  const users = new UsersRepository(db)
  t.equal(users.find('nora')?.keycloakId, created?.sub)
  t.equal(users.find('alice')?.keycloakId, cluster.standin.user('alice').sub)
  const posts = cluster.standin.adminCount('POST', '/users')

  const again = await cli('--json')
  t.equal(again.code, 0)
  t.match(JSON.parse(again.stdout), { selected: 3, counts: { already_linked: 3 } })
  t.equal(cluster.standin.adminCount('POST', '/users'), posts, 'a second run creates nothing')
})

t.test('sync status, retry and cleanup on the command line', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  writeConfig(dir, { ...cluster.settings(), sync: { enabled: false, max_attempts: 1 } })
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
  t.teardown(() => db.close())
  const queue = new SyncQueueRepository(db, ring)
  const bad = queue.enqueue({ username: 'ghost', operation: 'user_disable', payload: {} }, Date.now())
  queue.enqueue({ username: 'bob', operation: 'logout_user', payload: { keycloak_id: null, sid: null } }, Date.now())
  const c = join(dir, 'config.yaml')

  const before = JSON.parse((await runInProcess(['sync', 'status', '--json', '-c', c])).stdout) as Record<string, unknown>
  t.match(before, { by_status: { pending: 2 }, keycloak_reachable: true })
  const now = await runInProcess(['sync', 'now', '--json', '-c', c])
  t.match(JSON.parse(now.stdout), { done: 1, dead: 1 })
  const text = await runInProcess(['sync', 'status', '-c', c])
  t.match(text.stdout, /last error: user_disable for ghost \(dead\): .*no Keycloak user named ghost/)
  const retry = await runInProcess(['sync', 'retry', '--all-dead', '--json', '-c', c])
  t.same(JSON.parse(retry.stdout), { requeued: [bad], unrecoverable: [] })
  t.equal(queue.find(bad)?.status, 'pending')
  const cleanup = await runInProcess(['sync', 'cleanup', '--days', '0', '--json', '-c', c])
  t.same(JSON.parse(cleanup.stdout), { removed: 1, days: 0 })
  t.equal((await runInProcess(['sync', 'retry', '-c', c])).code, 2, 'retry needs an id or --all-dead')
})

t.test('every operation replays against the Admin API: update, disable, group membership, logout', async (t) => {
  const cluster = await startCluster(t, 1, { groups: ['/staff/admins', '/ops'] })
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), sync: { enabled: false } }))
  await gatehouse.started
  const queue = new SyncQueueRepository(gatehouse.db, ring)
  const bobRefresh = (await cluster.standin.passwordGrant('bob', 'bob-password')).refresh_token as string
  queue.enqueue({ username: 'bob', operation: 'group_membership', payload: { group: '/ops', action: 'add' } }, Date.now())
  queue.enqueue({ username: 'bob', operation: 'user_update', payload: { email: 'robert@example.test' } }, Date.now())
  queue.enqueue({ username: 'bob', operation: 'logout_user', payload: { keycloak_id: null, sid: null } }, Date.now())
  queue.enqueue({ username: 'alice', operation: 'group_membership', payload: { group: '/staff/admins', action: 'remove' } }, Date.now())
  queue.enqueue({ username: 'alice', operation: 'user_disable', payload: {} }, Date.now())
  t.match(await gatehouse.app.sync.worker.cycle(), { done: 5, failed: 0 })
  t.ok(cluster.standin.user('bob').groups.includes('/ops'))
  t.equal(cluster.standin.user('bob').email, 'robert@example.test')
  t.equal((await cluster.standin.tokenRequest({ grant_type: 'refresh_token', refresh_token: bobRefresh })).status, 400, 'bob\'s Keycloak sessions ended')
  t.notOk(cluster.standin.user('alice').groups.includes('/staff/admins'))
  t.equal(cluster.standin.user('alice').enabled, false)
})

t.test('gatehouse sync start stops cleanly on SIGTERM', async (t) => {
  const cluster = await startCluster(t, 1)
  const dir = t.testdir()
  writeConfig(dir, { ...cluster.settings(), sync: { enabled: false }, log: { level: 'info' } })
  const cli = startInProcess(['sync', 'start', '-c', join(dir, 'config.yaml')])
  await cli.waitForLog('sync worker started')
  cli.signal('SIGTERM')
  const result = await cli.done
  t.equal(result.code, 0, result.stderr)
  t.match(cli.log(), 'sync worker stopping')
})
