import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { createLogger } from '../log.ts'
import { SessionService } from '../session/service.ts'
import { KeyRing } from '../store/crypto.ts'
import type { Db } from '../store/db.ts'
import { openSessionStore } from '../store/open-session-store.ts'

/**
 * Runs `fn` with the session service over the configured session store (SQLite, or Redis with
 * this file as its local copy), as `serve` builds it, so every CLI write to sessions takes the
 * path a running sidecar's writes take: revocations reach every replica. Nothing is refreshed
 * (no Keycloak client here).
 */
export async function withSessionService<T> (config: Config, db: Db, clock: Clock, fn: (sessions: SessionService) => Promise<T>): Promise<T> {
  const log = createLogger({ level: 'silent' })
  const store = openSessionStore(config, { db, ring: new KeyRing(config.secrets.encryption_keys), clock, log })
  await store.start()
  const sessions = new SessionService({ config, store, clock, log, metrics: { tokenRefresh: { inc: () => {} } } })
  try {
    return await fn(sessions)
  } finally {
    await sessions.stop()
    await store.close()
  }
}
