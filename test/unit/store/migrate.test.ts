import t from 'tap'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { openDatabase, schemaVersion, probeWritable } from '../../../src/store/db.ts'
import { loadMigrations, migrate } from '../../../src/store/migrate.ts'

const TABLES = ['alert_events', 'alert_state', 'audit_log', 'jwks_cache', 'login_attempts', 'meta', 'password_reset_requests', 'password_reset_tokens', 'refresh_locks', 'service_tokens', 'sessions', 'store_outbox', 'sync_queue', 'token_cache', 'users']
const LATEST = loadMigrations().at(-1)?.version ?? 0

t.test('a new database gets every table of the design, in WAL mode', async (t) => {
  const path = join(t.testdir(), 'sub', 'g.db')
  const { db, migration } = openDatabase({ path })
  t.teardown(() => db.close())
  t.equal(migration.from, 0)
  t.equal(migration.to, LATEST)
  t.same(migration.applied, loadMigrations().map((m) => m.name))
  const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>).map((r) => r.name)
  t.same(tables, TABLES)
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal')
  t.equal(db.pragma('foreign_keys', { simple: true }), 1)
  t.equal(probeWritable(db, 1), null)
})

t.test('migrating twice applies nothing the second time', async (t) => {
  const path = join(t.testdir(), 'g.db')
  openDatabase({ path }).db.close()
  const again = openDatabase({ path })
  t.teardown(() => again.db.close())
  t.same(again.migration.applied, [])
  t.equal(again.migration.from, again.migration.to)
})

t.test('a database written by a newer Gatehouse is refused with a clear message', async (t) => {
  const path = join(t.testdir(), 'g.db')
  const raw = new Database(path)
  raw.pragma('user_version = 999')
  raw.close()
  t.throws(() => openDatabase({ path }), {
    code: 'ERR_DB_NEWER_SCHEMA',
    message: `database schema version 999 is newer than this Gatehouse understands (${LATEST}); run the newer Gatehouse or restore a backup taken before the upgrade`
  })
})

t.test('a failing migration leaves the file at the last whole version', async (t) => {
  const db = new Database(':memory:')
  t.teardown(() => db.close())
  const migrations = [
    { version: 1, name: '001-a', sql: 'CREATE TABLE a (x INTEGER);' },
    { version: 2, name: '002-b', sql: 'CREATE TABLE b (x INTEGER); INSERT INTO nowhere VALUES (1);' }
  ]
  t.throws(() => migrate(db, migrations), { code: 'ERR_DB_MIGRATION' })
  t.equal(schemaVersion(db), 1)
  t.equal((db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'b'").get() as { n: number }).n, 0, 'the half-applied step was rolled back')
})

t.test('an unopenable path is ERR_DB_OPEN', async (t) => {
  const dir = t.testdir({ file: 'x' })
  t.throws(() => openDatabase({ path: join(dir, 'file', 'g.db') }), { code: 'ERR_DB_OPEN' })
})

t.test('migration numbers may skip (branches reserve their own): each applies in order, the file ends at the last', async (t) => {
  const db = new Database(':memory:')
  t.teardown(() => db.close())
  const migrations = [
    { version: 1, name: '001-a', sql: 'CREATE TABLE a (x INTEGER);' },
    { version: 2, name: '002-b', sql: 'CREATE TABLE b (x INTEGER);' },
    { version: 5, name: '005-e', sql: 'CREATE TABLE e (x INTEGER);' }
  ]
  t.same(migrate(db, migrations).applied, ['001-a', '002-b', '005-e'])
  t.equal(schemaVersion(db), 5)
  t.same(migrate(db, migrations).applied, [], 'nothing the second time')
  t.ok(loadMigrations().some((m) => m.name === '005-service-tokens'), 'the shipped set has a gap and loads')
})
