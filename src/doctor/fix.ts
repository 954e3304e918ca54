import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { adminUrlOf } from '../cli/status-command.ts'
import { KeyRing } from '../store/crypto.ts'
import { AlertStateRepository } from '../store/alert-state.ts'
import { openConfiguredDatabase } from '../store/db.ts'
import { PasswordResetRepository } from '../store/password-resets.ts'
import { SyncQueueRepository } from '../store/sync-queue.ts'
import { TokenCacheRepository } from '../store/token-cache.ts'

/** One safe fix `doctor fix` applied, or found nothing to do for. */
export interface FixResult {
  name: string
  /** What it did (`applied 003-operations`, `nothing to do`). */
  done: string
  /** Whether it changed anything. */
  changed: boolean
}

/** Options of {@link applyFixes}. */
export interface FixOptions {
  config: Config
  clock: Clock
  /** Resets the running instance's circuits; resolves to the servers reset, or null when no instance answers. Default: `POST /breakers/reset` on its admin listener. */
  resetBreakers?: (config: Config) => Promise<string[] | null>
}

const DAY = 86_400_000

/**
 * `gatehouse doctor fix`: the fixes that cannot make anything worse, each reported. Creates the
 * database and applies pending migrations (what serve would do at start); gives back sync
 * items whose worker's lease ran out; resets the running instance's open circuits (the next
 * call tests each server again, and a server still down opens again after
 * `failure_threshold` failures); removes expired cached tokens, reset tokens and old alert
 * events. Nothing a person wrote (users, policies, the configuration) is touched.
 */
export async function applyFixes (options: FixOptions): Promise<FixResult[]> {
  const { config, clock } = options
  const out: FixResult[] = []
  const { db, migration } = openConfiguredDatabase(config)
  try {
    out.push(migration.applied.length > 0
      ? { name: 'database', done: `schema ${migration.from} → ${migration.to}: applied ${migration.applied.join(', ')}`, changed: true }
      : { name: 'database', done: `schema ${migration.to} is current: nothing to apply`, changed: false })
    const now = clock.now()
    const ring = new KeyRing(config.secrets.encryption_keys)
    const released = new SyncQueueRepository(db, ring).releaseExpiredLeases(now)
    out.push({ name: 'sync leases', done: released > 0 ? `gave back ${released} item${released === 1 ? '' : 's'} held by a worker whose lease ran out` : 'no expired lease', changed: released > 0 })
    const graceMs = config.keycloak.resilience.token_grace_period_hours * 3_600_000
    const tokens = new TokenCacheRepository(db, ring).cleanup(now, graceMs)
    const resets = new PasswordResetRepository(db).purge(now - config.password_reset.window_minutes * 60_000)
    const alerts = new AlertStateRepository(db).purge(now - 30 * DAY)
    const removed = tokens + resets + alerts
    out.push({ name: 'expired tokens', done: removed > 0 ? `removed ${tokens} cached token set${tokens === 1 ? '' : 's'} past the grace period or of ended sessions, ${resets} expired reset token or request row${resets === 1 ? '' : 's'}, ${alerts} alert record${alerts === 1 ? '' : 's'} older than 30 days` : 'nothing expired', changed: removed > 0 })
  } finally {
    db.close()
  }
  const reset = await (options.resetBreakers ?? resetRunningBreakers)(config)
  out.push(reset === null
    ? { name: 'circuits', done: `no running instance answers at ${adminUrlOf(config)}: circuits live in its memory, nothing to reset`, changed: false }
    : { name: 'circuits', done: reset.length > 0 ? `reset ${reset.join(', ')} on the running instance` : 'every circuit of the running instance is closed', changed: reset.length > 0 })
  return out
}

/** `POST /breakers/reset` on the admin listener of the instance this configuration describes. */
export async function resetRunningBreakers (config: Config): Promise<string[] | null> {
  try {
    const response = await fetch(`${adminUrlOf(config)}/breakers/reset`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', signal: AbortSignal.timeout(2000) })
    if (!response.ok) return null
    return ((await response.json()) as { reset: string[] }).reset
  } catch {
    return null
  }
}
