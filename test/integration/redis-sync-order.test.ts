// Issue 14 item 5: each replica's sync queue stays in its own SQLite file; a user's writes taken
// by different replicas keep their order through a per-user replay turn in Redis.
import { join } from 'node:path'
import t from 'tap'
import { KeyRing } from '../../src/store/crypto.ts'
import { openDatabase } from '../../src/store/db.ts'
import { RedisSessionStore } from '../../src/store/redis-session-store.ts'
import { SqliteSessionStore } from '../../src/store/sqlite-session-store.ts'
import { manualClock } from '../fixtures/clock.ts'
import { captureLog, TEST_SECRETS } from '../fixtures/gatehouse.ts'
import { startRedis } from '../fixtures/redis.ts'
import { startReplicas } from '../fixtures/replicas.ts'
import type { SyncQueueRepository } from '../../src/store/sync-queue.ts'

t.test('a user\'s replay turn: one replica at a time, and an older write of the same kind is superseded', async (t) => {
  const redis = await startRedis(t)
  if (redis === null) return
  const ring = new KeyRing(TEST_SECRETS.encryption_keys)
  const clock = manualClock()
  const open = async (name: string): Promise<RedisSessionStore> => {
    const db = openDatabase({ path: join(t.testdir(), `${name}.db`) }).db
    const store = new RedisSessionStore({
      redis: { url: redis.url, key_prefix: 'order:', connect_timeout_ms: 2000, command_timeout_ms: 1000, failure_threshold: 3, cooldown_seconds: 5, sentinels: [] },
      local: new SqliteSessionStore(db, ring, clock), ring, clock, log: captureLog('warn').logger
    })
    t.teardown(async () => { await store.close(); db.close() })
    await store.start()
    return store
  }
  const a = (await open('a')).syncOrder
  const b = (await open('b')).syncOrder
  const now = clock.now()
  const newer = await a.begin({ username: 'Erin', queuedAt: now }, 'password', 60_000)
  t.equal(newer.kind, 'apply', 'A replays the newer password change')
  t.equal((await b.begin({ username: 'erin', queuedAt: now - 5000 }, 'password', 60_000)).kind, 'busy', 'B waits while A replays erin\'s items')
  t.equal((await b.begin({ username: 'frank', queuedAt: now - 5000 }, 'password', 60_000)).kind, 'apply', 'another user is not held up')
  if (newer.kind === 'apply') await newer.end()
  t.equal((await b.begin({ username: 'erin', queuedAt: now - 5000 }, 'password', 60_000)).kind, 'superseded', 'B\'s older password change is superseded: the newer one stands')
  const group = await b.begin({ username: 'erin', queuedAt: now - 5000 }, 'group:staff', 60_000)
  t.equal(group.kind, 'apply', 'a write of another kind is not')
  if (group.kind === 'apply') await group.end()
  const again = await a.begin({ username: 'erin', queuedAt: now }, 'password', 60_000)
  t.equal(again.kind, 'apply', 'the same item replayed again (after a crash) is not superseded by itself')
})

// Through the workers of two real sidecars sharing one Redis (their queues stay in their files).
t.test('two replicas\' workers: the newer password change wins whichever replays first, and a held turn makes the other wait', async (t) => {
  const replicas = await startReplicas(t, 2, { sync: { enabled: false } })
  if (replicas === null) return
  const { cluster, clock, redis } = replicas
  const [a, b] = replicas.sidecars
  const change = (password: string): Parameters<SyncQueueRepository['enqueue']>[0] => ({ username: 'alice', operation: 'password_change', payload: { keycloak_id: null }, secret: { password } })
  const older = a!.app.sync.queue.enqueue(change('alice-older-secret-1'), clock.now())
  clock.advance(1000)
  b!.app.sync.queue.enqueue(change('alice-newer-secret-2'), clock.now())
  cluster.standin.resetCounts()

  t.match(await b!.app.sync.worker.cycle(), { done: 1, failed: 0 }, 'B replays the newer change first')
  t.equal(cluster.standin.passwordOf('alice'), 'alice-newer-secret-2')
  t.match(await a!.app.sync.worker.cycle(), { done: 1, failed: 0 }, 'A settles its older one')
  t.equal(cluster.standin.passwordOf('alice'), 'alice-newer-secret-2', 'superseded: Keycloak keeps the newer password')
  t.equal(cluster.standin.adminCount('PUT', '/reset-password'), 1, 'the older change never reached Keycloak')
  t.equal(a!.app.sync.queue.list().find((i) => i.id === older)?.status, 'done')

  // Another replica holds alice's turn (mid-replay): A gives its item back and sends nothing.
  await redis.command('SET', 'app:sync:lease:alice', 'another-replica', 'PX', '60000')
  clock.advance(1000)
  a!.app.sync.queue.enqueue(change('alice-third-secret-3'), clock.now())
  await a!.app.sync.worker.cycle()
  t.equal(cluster.standin.adminCount('PUT', '/reset-password'), 1, 'nothing replayed while the turn is held elsewhere')
  t.equal(a!.app.sync.queue.list('pending').length, 1, 'the item waits, pending')
  await redis.command('DEL', 'app:sync:lease:alice')
  t.match(await a!.app.sync.worker.cycle(), { done: 1 }, 'replayed once the turn is free')
  t.equal(cluster.standin.passwordOf('alice'), 'alice-third-secret-3')
  t.equal(cluster.standin.adminCount('PUT', '/reset-password'), 2)
})
