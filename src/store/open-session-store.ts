import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { KeyRing } from './crypto.ts'
import type { Db } from './db.ts'
import type { SessionStore } from './session-store.ts'
import { SqliteSessionStore } from './sqlite-session-store.ts'

/** What {@link openSessionStore} needs. */
export interface SessionStoreDeps {
  db: Db
  ring: KeyRing
  clock: Clock
  log: Logger
}

/** The session store `store.sessions` names. Not started: call `start()` (serve and the CLI do). */
export function openSessionStore (_config: Config, deps: SessionStoreDeps): SessionStore {
  return new SqliteSessionStore(deps.db, deps.ring, deps.clock)
}
