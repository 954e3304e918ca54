import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { KeyRing } from './crypto.ts'
import type { Db } from './db.ts'
import { RedisSessionStore } from './redis-session-store.ts'
import type { SessionStore } from './session-store.ts'
import { SqliteSessionStore } from './sqlite-session-store.ts'

/** What {@link openSessionStore} needs. */
export interface SessionStoreDeps {
  db: Db
  ring: KeyRing
  clock: Clock
  log: Logger
}

/**
 * The session store `store.sessions` names: SQLite (the file's tables), or Redis with the file
 * as its local copy. Not started: call `start()` (serve and the CLI do).
 */
export function openSessionStore (config: Config, deps: SessionStoreDeps): SessionStore {
  const local = new SqliteSessionStore(deps.db, deps.ring, deps.clock)
  if (config.store.sessions === 'sqlite') return local
  return new RedisSessionStore({ redis: config.store.redis, local, ring: deps.ring, clock: deps.clock, log: deps.log })
}
