import t from 'tap'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { openDatabase } from '../../../src/store/db.ts'
import { KeyRing } from '../../../src/store/crypto.ts'
import { SyncQueueRepository } from '../../../src/store/sync-queue.ts'

function queue (t: { teardown: (fn: () => unknown) => void, testdir: () => string }): SyncQueueRepository {
  const { db } = openDatabase({ path: join(t.testdir(), 'q.db') })
  t.teardown(() => db.close())
  return new SyncQueueRepository(db, new KeyRing([randomBytes(32).toString('hex')]))
}

t.test('claims go by priority across users, but never past a user\'s earlier item', async (t) => {
  const q = queue(t)
  const a1 = q.enqueue({ username: 'ann', operation: 'user_create', payload: {} }, 1)
  const a2 = q.enqueue({ username: 'ann', operation: 'password_change', payload: { keycloak_id: null }, secret: { password: 'p' } }, 2)
  const b1 = q.enqueue({ username: 'ben', operation: 'logout_user', payload: { keycloak_id: null, sid: null } }, 3)
  const c1 = q.enqueue({ username: 'cy', operation: 'user_update', payload: {} }, 0)
  const first = q.claim('w1', 10, 10, 1000).map((i) => i.id)
  t.same(first, [b1, c1, a1], 'priority 1 first, then by age; ann\'s password change waits for her creation')
  t.same(q.claim('w2', 10, 10, 1000), [], 'leased items are not claimed twice')
  t.ok(q.complete(a1, 'w1', 11))
  t.same(q.claim('w2', 12, 10, 1000).map((i) => i.id), [a2], 'her next item is claimable once the earlier is done')
})

t.test('a lease fences: an expired lease is reclaimed and the old worker can no longer settle the item', async (t) => {
  const q = queue(t)
  const id = q.enqueue({ username: 'ann', operation: 'password_change', payload: { keycloak_id: null }, secret: { password: 'secret-1' } }, 1)
  t.equal(q.claim('dead-worker', 10, 10, 100)[0]?.attempts, 1)
  t.same(q.claim('w2', 50, 10, 100), [], 'not before the lease ends')
  const again = q.claim('w2', 111, 10, 100)
  t.equal(again[0]?.id, id)
  t.equal(again[0]?.attempts, 2)
  t.notOk(q.complete(id, 'dead-worker', 112), 'the first worker lost the item')
  t.ok(q.complete(id, 'w2', 113))
  t.equal(q.secretOf(id), null, 'the password is erased once done')
})

t.test('coalescing: a newer password change replaces older unfinished ones; a disable keeps its place', async (t) => {
  const q = queue(t)
  q.enqueue({ username: 'ann', operation: 'password_change', payload: { keycloak_id: null }, secret: { password: 'one' } }, 1)
  q.enqueue({ username: 'ann', operation: 'user_update', payload: { email: 'a@x' } }, 2)
  q.enqueue({ username: 'ann', operation: 'user_disable', payload: {} }, 3)
  const last = q.enqueue({ username: 'ann', operation: 'password_change', payload: { keycloak_id: null }, secret: { password: 'two' } }, 4)
  t.same(q.list('pending').map((i) => i.operation), ['user_update', 'user_disable', 'password_change'])
  t.same(q.secretOf(last), { password: 'two' })
})

t.test('failures back off, die at the end, and retry brings back what can be replayed', async (t) => {
  const q = queue(t)
  const pw = q.enqueue({ username: 'ann', operation: 'password_change', payload: { keycloak_id: null }, secret: { password: 'x' } }, 1)
  const up = q.enqueue({ username: 'ben', operation: 'user_update', payload: {} }, 1)
  q.claim('w', 10, 10, 100)
  t.ok(q.fail(up, 'w', 'HTTP 400', 11, { dead: false, at: 500 }))
  t.ok(q.fail(pw, 'w', 'HTTP 400', 11, { dead: true }))
  t.same(q.claim('w', 20, 10, 100), [], 'nothing due before the retry time')
  t.equal(q.secretOf(pw), null, 'a dead item\'s password is erased')
  t.match(q.stats(20), { byStatus: { failed: 1, dead: 1 }, lastError: { error: 'HTTP 400' } })
  t.same(q.retry({ allDead: true }, 30), { requeued: [], unrecoverable: [pw] }, 'a dead password change cannot be replayed without its password')
  t.same(q.retry({ id: up }, 30).requeued, [up])
  t.equal(q.claim('w', 31, 10, 100)[0]?.attempts, 1, 'a retried item starts counting again')
  t.ok(q.release(up, 'w', 'keycloak unreachable'))
  t.equal(q.find(up)?.attempts, 0, 'an attempt given back does not count')
})

t.test('unknown operations are refused when queued', async (t) => {
  const q = queue(t)
  t.throws(() => q.enqueue({ username: 'ann', operation: 'drop_database' as 'user_create', payload: {} }, 1), /unknown sync operation/)
})

t.test('a logout_user queued before payloads were typed ({ subject }) reads as { keycloak_id, sid }', async (t) => {
  const { db } = openDatabase({ path: join(t.testdir(), 'q.db') })
  t.teardown(() => db.close())
  const q = new SyncQueueRepository(db, new KeyRing([randomBytes(32).toString('hex')]))
  const id = q.enqueue({ username: 'ann', operation: 'logout_user', payload: { keycloak_id: null, sid: null } }, 1)
  db.prepare('UPDATE sync_queue SET payload = ? WHERE id = ?').run(JSON.stringify({ subject: 'sub-ann' }), id)
  t.same(q.find(id)?.payload, { keycloak_id: 'sub-ann', sid: null })
})
