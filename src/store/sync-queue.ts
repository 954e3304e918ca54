import { randomUUID } from 'node:crypto'
import { CodedTypeError } from '../errors.ts'
import type { KeyRing } from './crypto.ts'
import type { Db } from './db.ts'

/** Identity writes replayed to Keycloak (the sync-queue issue's list). */
export const SYNC_OPERATIONS = ['password_change', 'user_create', 'user_update', 'user_disable', 'logout_user', 'group_membership'] as const
export type SyncOperation = typeof SYNC_OPERATIONS[number]

/**
 * The non-secret payload of each operation, stored as JSON. `keycloak_id` is the Keycloak
 * user id when it is known; when it is not, the worker finds the user by name, and the id it
 * found is recorded in the payload of the item when it is done.
 */
export interface SyncPayloads {
  password_change: { keycloak_id: string | null }
  user_create: { email?: string | null, first_name?: string | null, last_name?: string | null, enabled?: boolean, source?: string, keycloak_id?: string, linked?: boolean }
  user_update: { keycloak_id?: string | null, email?: string, first_name?: string, last_name?: string, enabled?: boolean }
  user_disable: { keycloak_id?: string | null }
  /** `sid`: the one Keycloak session a queued RP logout was for (the replay ends all of the user's). */
  logout_user: { keycloak_id: string | null, sid: string | null }
  group_membership: { keycloak_id?: string | null, group: string, action: 'add' | 'remove' }
}

/** An operation with its payload: the discriminated union every producer and the worker share. */
export type SyncWrite = { [K in SyncOperation]: { operation: K, payload: SyncPayloads[K] } }[SyncOperation]

/** Where an item is in its life. */
export type SyncStatus = 'pending' | 'processing' | 'done' | 'failed' | 'dead'

/** Default priority (lower first); password changes and logouts go ahead of provisioning. */
export const DEFAULT_PRIORITY: Record<SyncOperation, number> = {
  password_change: 1,
  logout_user: 1,
  user_disable: 2,
  user_update: 5,
  group_membership: 5,
  user_create: 5
}

/** What `sync status` reports. */
export interface SyncStats {
  byStatus: Record<SyncStatus, number>
  byOperation: Array<{ operation: string, status: SyncStatus, count: number }>
  /** Age of the oldest unfinished item, or null. */
  oldestPendingSeconds: number | null
  lastError: { id: string, username: string, operation: string, status: SyncStatus, error: string } | null
}

/** What queueing an operation takes. */
export type EnqueueInput = SyncWrite & {
  username: string
  /** Secret data (a password), stored encrypted and erased once the item succeeds or dies. */
  secret?: Record<string, string>
  priority?: number
}

/** An item as stored (secret never decrypted here). */
export type SyncItem = SyncWrite & SyncItemState

/** Everything of a stored item but its operation and payload. */
export interface SyncItemState {
  id: string
  username: string
  hasSecret: boolean
  priority: number
  status: SyncStatus
  attempts: number
  nextAttemptAt: number
  queuedAt: number
  processedAt: number | null
  lastError: string | null
  leaseOwner: string | null
  leaseExpiresAt: number | null
}

interface Row {
  id: string
  username: string
  operation: SyncOperation
  payload: string
  payload_enc: Buffer | null
  priority: number
  status: SyncStatus
  attempts: number
  next_attempt_at: number
  queued_at: number
  processed_at: number | null
  last_error: string | null
  lease_owner: string | null
  lease_expires_at: number | null
}

// Items queued before the payloads were typed: `sessions logout-user` wrote `{ subject }`.
function payloadOf (operation: SyncOperation, json: string): SyncWrite['payload'] {
  const payload = JSON.parse(json) as Record<string, unknown>
  if (operation === 'logout_user' && payload.keycloak_id === undefined) {
    return { keycloak_id: typeof payload.subject === 'string' ? payload.subject : null, sid: typeof payload.sid === 'string' ? payload.sid : null }
  }
  return payload as SyncWrite['payload']
}

function fromRow (row: Row): SyncItem {
  return {
    id: row.id,
    username: row.username,
    ...{ operation: row.operation, payload: payloadOf(row.operation, row.payload) } as SyncWrite,
    hasSecret: row.payload_enc !== null,
    priority: row.priority,
    status: row.status,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    queuedAt: row.queued_at,
    processedAt: row.processed_at,
    lastError: row.last_error,
    leaseOwner: row.lease_owner,
    leaseExpiresAt: row.lease_expires_at
  }
}

/**
 * The `sync_queue` table: identity writes waiting for Keycloak. Secret parts of a payload (a
 * new password) are encrypted with the key ring, bound to the item's id, never stored in
 * plain text. An unknown operation is refused here, when queued, not when replayed.
 */
export class SyncQueueRepository {
  readonly #db: Db
  readonly #ring: KeyRing

  constructor (db: Db, ring: KeyRing) {
    this.#db = db
    this.#ring = ring
  }

  /**
   * Queues an operation; returns its id. A newer password change for a user replaces an
   * older one still pending (only the last password matters, and an older one must never
   * reach Keycloak after a newer one).
   */
  enqueue (input: EnqueueInput, now: number): string {
    if (!(SYNC_OPERATIONS as readonly string[]).includes(input.operation)) {
      throw new CodedTypeError(`unknown sync operation ${JSON.stringify(input.operation)}; known: ${SYNC_OPERATIONS.join(', ')}`)
    }
    const id = randomUUID()
    const secret = input.secret === undefined ? null : this.#ring.encrypt(JSON.stringify(input.secret), `sync_queue:${id}`)
    this.#db.transaction(() => {
      if (input.operation === 'password_change') {
        this.#db.prepare("DELETE FROM sync_queue WHERE username = ? AND operation = 'password_change' AND status IN ('pending', 'failed')").run(input.username)
      }
      this.#db.prepare(`INSERT INTO sync_queue (id, username, operation, payload, payload_enc, priority, status, attempts, next_attempt_at, queued_at)
        VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)`).run(id, input.username, input.operation, JSON.stringify(input.payload), secret,
        input.priority ?? DEFAULT_PRIORITY[input.operation], now, now)
    }).immediate()
    return id
  }

  /** An item by id. */
  find (id: string): SyncItem | null {
    const row = this.#db.prepare('SELECT * FROM sync_queue WHERE id = ?').get(id) as Row | undefined
    return row === undefined ? null : fromRow(row)
  }

  /** The decrypted secret part of an item's payload, or null. */
  secretOf (id: string): Record<string, string> | null {
    const row = this.#db.prepare('SELECT payload_enc FROM sync_queue WHERE id = ?').get(id) as { payload_enc: Buffer | null } | undefined
    if (row?.payload_enc == null) return null
    return JSON.parse(this.#ring.decryptText(row.payload_enc, `sync_queue:${id}`)) as Record<string, string>
  }

  /** Items, oldest first, optionally of one status. */
  list (status?: SyncStatus): SyncItem[] {
    const rows = (status === undefined
      ? this.#db.prepare('SELECT * FROM sync_queue ORDER BY queued_at, rowid').all()
      : this.#db.prepare('SELECT * FROM sync_queue WHERE status = ? ORDER BY queued_at, rowid').all(status)) as Row[]
    return rows.map(fromRow)
  }

  /**
   * Claims up to `limit` due items for `owner`, leasing them until `now + leaseMs`: the most
   * urgent first (priority, then age), but only each user's oldest unfinished item, so a
   * user's later write never overtakes an earlier one. Due means pending or failed with its
   * retry time reached, or processing with an expired lease (its worker died). One IMMEDIATE
   * transaction, so two workers never claim the same item.
   */
  claim (owner: string, now: number, limit: number, leaseMs: number): SyncItem[] {
    return this.#db.transaction(() => {
      const rows = this.#db.prepare(`SELECT q.* FROM sync_queue q
        WHERE ((q.status IN ('pending', 'failed') AND q.next_attempt_at <= @now) OR (q.status = 'processing' AND q.lease_expires_at <= @now))
          AND NOT EXISTS (SELECT 1 FROM sync_queue e WHERE e.username = q.username AND e.status IN ('pending', 'processing', 'failed')
            AND (e.queued_at < q.queued_at OR (e.queued_at = q.queued_at AND e.rowid < q.rowid)))
        ORDER BY q.priority, q.queued_at, q.rowid LIMIT @limit`).all({ now, limit }) as Row[]
      const lease = this.#db.prepare("UPDATE sync_queue SET status = 'processing', attempts = attempts + 1, lease_owner = ?, lease_expires_at = ? WHERE id = ?")
      for (const row of rows) lease.run(owner, now + leaseMs, row.id)
      return rows.map((row) => ({ ...fromRow(row), status: 'processing' as const, attempts: row.attempts + 1, leaseOwner: owner, leaseExpiresAt: now + leaseMs }))
    }).immediate()
  }

  /**
   * Marks a leased item done and erases its secret. Fenced by the lease: a worker whose lease
   * ran out (and whose item another worker took) changes nothing. Returns whether it did.
   */
  complete (id: string, owner: string, now: number, payload?: SyncWrite['payload']): boolean {
    const extra = payload === undefined ? '' : ', payload = @payload'
    return this.#db.prepare(`UPDATE sync_queue SET status = 'done', processed_at = @now, payload_enc = NULL, last_error = NULL, lease_owner = NULL, lease_expires_at = NULL${extra}
      WHERE id = @id AND status = 'processing' AND lease_owner = @owner`).run({ id, owner, now, ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }) }).changes === 1
  }

  /** Records a failed attempt: retried at `nextAttemptAt`, or dead (secret erased). Fenced like {@link complete}. */
  fail (id: string, owner: string, error: string, now: number, next: { dead: true } | { dead: false, at: number }): boolean {
    const sql = next.dead
      ? "UPDATE sync_queue SET status = 'dead', processed_at = @now, last_failed_at = @now, payload_enc = NULL, last_error = @error, lease_owner = NULL, lease_expires_at = NULL WHERE id = @id AND status = 'processing' AND lease_owner = @owner"
      : "UPDATE sync_queue SET status = 'failed', next_attempt_at = @at, last_failed_at = @now, last_error = @error, lease_owner = NULL, lease_expires_at = NULL WHERE id = @id AND status = 'processing' AND lease_owner = @owner"
    return this.#db.prepare(sql).run({ id, owner, now, error: error.slice(0, 500), ...(next.dead ? {} : { at: next.at }) }).changes === 1
  }

  /** Gives a leased item back untouched (Keycloak went away mid-batch): the attempt does not count. */
  release (id: string, owner: string, error: string): boolean {
    return this.#db.prepare(`UPDATE sync_queue SET status = CASE WHEN attempts > 1 THEN 'failed' ELSE 'pending' END, attempts = attempts - 1,
      last_error = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND status = 'processing' AND lease_owner = ?`).run(error.slice(0, 500), id, owner).changes === 1
  }

  /**
   * Puts failed or dead items back to pending with a fresh attempt count. An item whose secret
   * was erased when it died (a password change) cannot be replayed and is left as it is.
   * Returns the ids requeued.
   */
  retry (which: { id: string } | { allDead: true }, now: number): { requeued: string[], unrecoverable: string[] } {
    const rows = ('id' in which
      ? this.#db.prepare("SELECT * FROM sync_queue WHERE id = ? AND status IN ('failed', 'dead')").all(which.id)
      : this.#db.prepare("SELECT * FROM sync_queue WHERE status = 'dead'").all()) as Row[]
    const requeued: string[] = []
    const unrecoverable: string[] = []
    const update = this.#db.prepare("UPDATE sync_queue SET status = 'pending', attempts = 0, next_attempt_at = ?, processed_at = NULL WHERE id = ?")
    this.#db.transaction(() => {
      for (const row of rows) {
        if (row.operation === 'password_change' && row.payload_enc === null) { unrecoverable.push(row.id); continue }
        update.run(now, row.id)
        requeued.push(row.id)
      }
    })()
    return { requeued, unrecoverable }
  }

  /** Deletes done items processed before `before`; returns how many. */
  purgeDone (before: number): number {
    return this.#db.prepare("DELETE FROM sync_queue WHERE status = 'done' AND processed_at < ?").run(before).changes
  }

  /** Items by status and the oldest unfinished one's age: what the metrics read at each scrape. */
  depth (now: number): Pick<SyncStats, 'byStatus' | 'oldestPendingSeconds'> {
    const oldest = this.#db.prepare("SELECT min(queued_at) AS at FROM sync_queue WHERE status IN ('pending', 'failed', 'processing')").get() as { at: number | null }
    return { byStatus: this.countByStatus(), oldestPendingSeconds: oldest.at === null ? null : Math.max(0, Math.round((now - oldest.at) / 1000)) }
  }

  /** The picture `sync status` and `/status` show. */
  stats (now: number): SyncStats {
    const byOperation = this.#db.prepare('SELECT operation, status, count(*) AS n FROM sync_queue GROUP BY operation, status ORDER BY operation, status').all() as Array<{ operation: string, status: SyncStatus, n: number }>
    const lastError = this.#db.prepare("SELECT id, username, operation, last_error, status FROM sync_queue WHERE last_error IS NOT NULL AND status IN ('failed', 'dead') ORDER BY coalesce(processed_at, next_attempt_at) DESC LIMIT 1").get() as { id: string, username: string, operation: string, last_error: string, status: SyncStatus } | undefined
    return {
      ...this.depth(now),
      byOperation: byOperation.map((r) => ({ operation: r.operation, status: r.status, count: r.n })),
      lastError: lastError === undefined ? null : { id: lastError.id, username: lastError.username, operation: lastError.operation, status: lastError.status, error: lastError.last_error }
    }
  }

  /** Attempts that failed (the item was retried later, or died) since `since`: one per item, its latest. */
  failedSince (since: number): number {
    return (this.#db.prepare('SELECT count(*) AS n FROM sync_queue WHERE last_failed_at >= ?').get(since) as { n: number }).n
  }

  /**
   * Items held by a worker whose lease has run out (the worker died or hangs): what `doctor
   * fix` gives back, as the next worker's claim would. Returns how many there are.
   */
  expiredLeases (now: number): number {
    return (this.#db.prepare("SELECT count(*) AS n FROM sync_queue WHERE status = 'processing' AND lease_expires_at <= ?").get(now) as { n: number }).n
  }

  /**
   * Gives back every item whose lease ran out, as {@link release} does for one: pending (or
   * failed, after earlier attempts), the interrupted attempt not counted. Returns how many.
   */
  releaseExpiredLeases (now: number): number {
    return this.#db.prepare(`UPDATE sync_queue SET status = CASE WHEN attempts > 1 THEN 'failed' ELSE 'pending' END, attempts = max(attempts - 1, 0),
      next_attempt_at = min(next_attempt_at, @now), last_error = coalesce(last_error, 'lease expired: released by doctor fix'), lease_owner = NULL, lease_expires_at = NULL
      WHERE status = 'processing' AND lease_expires_at <= @now`).run({ now }).changes
  }

  /** Unfinished items of one user and operation (for idempotent provisioning). */
  unfinished (username: string, operation: SyncOperation): SyncItem[] {
    return (this.#db.prepare("SELECT * FROM sync_queue WHERE username = ? AND operation = ? AND status IN ('pending', 'processing', 'failed')").all(username, operation) as Row[]).map(fromRow)
  }

  /** Items by status. */
  countByStatus (): Record<SyncStatus, number> {
    const counts: Record<SyncStatus, number> = { pending: 0, processing: 0, done: 0, failed: 0, dead: 0 }
    for (const row of this.#db.prepare('SELECT status, count(*) AS n FROM sync_queue GROUP BY status').all() as Array<{ status: SyncStatus, n: number }>) counts[row.status] = row.n
    return counts
  }
}
