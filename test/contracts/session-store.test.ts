import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import t from 'tap'
import { KeyRing, sha256 } from '../../src/store/crypto.ts'
import { openDatabase } from '../../src/store/db.ts'
import { RedisSessionStore } from '../../src/store/redis-session-store.ts'
import { SqliteSessionStore } from '../../src/store/sqlite-session-store.ts'
import { manualClock } from '../fixtures/clock.ts'
import { captureLog, TEST_SECRETS } from '../fixtures/gatehouse.ts'
import { startRedis } from '../fixtures/redis.ts'
import { sessionRecord, sessionStoreContract, tokensFor, type OpenedStore } from './session-store.ts'

const ring = new KeyRing(TEST_SECRETS.encryption_keys)

// Two connections to one file: a sidecar and the CLI (or a second process) beside it.
sessionStoreContract(t, 'sqlite', async (t): Promise<OpenedStore> => {
  const path = join(t.testdir(), 'gatehouse.db')
  const clock = manualClock()
  const one = openDatabase({ path }).db
  const two = openDatabase({ path }).db
  t.teardown(() => { one.close(); two.close() })
  const dump = async (): Promise<string> => {
    const tables = one.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[]
    return tables.map((name) => JSON.stringify(one.prepare(`SELECT * FROM ${name}`).all(), (_k, v: unknown) => {
      const buffer = v as { type?: string, data?: number[] }
      return buffer?.type === 'Buffer' && Array.isArray(buffer.data) ? Buffer.from(buffer.data).toString('hex') : v
    })).join('\n')
  }
  return { store: new SqliteSessionStore(one, ring, clock), peer: new SqliteSessionStore(two, ring, clock), clock, dump, outlive: async (ms) => { clock.advance(ms) } }
})

// Two replicas, each with its own SQLite copy, sharing one real redis-server (a key prefix per test).
let prefixes = 0
sessionStoreContract(t, 'redis', async (t): Promise<OpenedStore | null> => {
  const server = await startRedis(t)
  if (server === null) return null
  const clock = manualClock()
  const prefix = `contract${++prefixes}:`
  const redis = { url: server.url, key_prefix: prefix, connect_timeout_ms: 2000, command_timeout_ms: 1000, failure_threshold: 3, cooldown_seconds: 5, sentinels: [] }
  const open = async (name: string): Promise<RedisSessionStore> => {
    const db = openDatabase({ path: join(t.testdir(), `${name}.db`) }).db
    const store = new RedisSessionStore({ redis, local: new SqliteSessionStore(db, ring, clock), ring, clock, log: captureLog('warn').logger })
    t.teardown(async () => { await store.close(); db.close() })
    await store.start()
    return store
  }
  const store = await open('a')
  const peer = await open('b')
  const reader = new Redis(server.url)
  t.teardown(() => { reader.disconnect() })
  const dump = async (): Promise<string> => {
    const lines: string[] = []
    for (const key of await reader.keys(`${prefix}*`)) {
      const type = await reader.type(key)
      const value = type === 'string'
        ? await reader.get(key)
        : type === 'hash' ? await reader.hgetall(key) : type === 'set' ? await reader.smembers(key) : await reader.zrange(key, '0', '-1', 'WITHSCORES')
      lines.push(`${key} ${JSON.stringify(value)}`)
    }
    return lines.join('\n')
  }
  // Redis keeps the lease's time itself: nothing to move; the suite polls until it runs out.
  return { store, peer, clock, dump, outlive: async () => {} }
})

// Redis only (SQLite has no TTLs: `expire()` ends its rows): every key that names one session
// lives exactly as long as the session may (issue 14 item 3), so nothing outlasts it in Redis.
t.test('redis: every key of a session expires at the session\'s absolute end', async (t) => {
  const server = await startRedis(t)
  if (server === null) return
  const clock = manualClock()
  const db = openDatabase({ path: join(t.testdir(), 'ttl.db') }).db
  const redis = { url: server.url, key_prefix: 'ttl:', connect_timeout_ms: 2000, command_timeout_ms: 1000, failure_threshold: 3, cooldown_seconds: 5, sentinels: [] }
  const store = new RedisSessionStore({ redis, local: new SqliteSessionStore(db, ring, clock), ring, clock, log: captureLog('warn').logger })
  t.teardown(async () => { await store.close(); db.close() })
  await store.start()
  const reader = new Redis(server.url)
  t.teardown(() => { reader.disconnect() })

  const record = sessionRecord(clock.now(), { keycloakSid: 'sid-ttl', subject: 'sub-ttl', username: 'ttl-user' })
  const hash = sha256(randomBytes(32))
  await store.insert(record, hash, tokensFor(record, clock.now()))
  const lease = await store.lockRefresh(record.id, 60_000)
  if (typeof lease === 'string') { t.fail(`no lease: ${lease}`); return }
  await lease.release()
  const keys = [`ttl:session:${record.id}`, `ttl:secret:${hash.toString('hex')}`, `ttl:fence:${record.id}`, 'ttl:user:ttl-user', 'ttl:sub:sub-ttl', 'ttl:sid:sid-ttl']
  for (const key of keys) t.equal(await reader.pexpiretime(key), record.expiresAt, `${key} expires at the session's end`)
  t.same((await reader.keys(`ttl:*${record.id}*`)).sort(), [`ttl:fence:${record.id}`, `ttl:session:${record.id}`], 'no other key names the session')
})
