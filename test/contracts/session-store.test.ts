import { join } from 'node:path'
import t from 'tap'
import { KeyRing } from '../../src/store/crypto.ts'
import { openDatabase } from '../../src/store/db.ts'
import { SqliteSessionStore } from '../../src/store/sqlite-session-store.ts'
import { manualClock } from '../fixtures/clock.ts'
import { TEST_SECRETS } from '../fixtures/gatehouse.ts'
import { sessionStoreContract, type OpenedStore } from './session-store.ts'

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
