import { randomUUID } from 'node:crypto'
import { CodedTypeError } from '../errors.ts'
import type { KeyRing } from './crypto.ts'
import type { Db } from './db.ts'

/** Identity writes replayed to Keycloak (the sync-queue issue's list). */
export const SYNC_OPERATIONS = ['password_change', 'user_create', 'user_update', 'user_disable', 'logout_user', 'group_membership'] as const
export type SyncOperation = typeof SYNC_OPERATIONS[number]

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

/** What queueing an operation takes. */
export interface EnqueueInput {
  username: string
  operation: SyncOperation
  /** Non-secret data, stored as JSON. */
  payload?: Record<string, unknown>
  /** Secret data (a password), stored encrypted and erased once the item succeeds or dies. */
  secret?: Record<string, string>
  priority?: number
}

/** An item as stored (secret never decrypted here). */
export interface SyncItem {
  id: string
  username: string
  operation: SyncOperation
  payload: Record<string, unknown>
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

function fromRow (row: Row): SyncItem {
  return {
    id: row.id,
    username: row.username,
    operation: row.operation,
    payload: JSON.parse(row.payload) as Record<string, unknown>,
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
        this.#db.prepare("DELETE FROM sync_queue WHERE username = ? AND operation = 'password_change' AND status = 'pending'").run(input.username)
      }
      this.#db.prepare(`INSERT INTO sync_queue (id, username, operation, payload, payload_enc, priority, status, attempts, next_attempt_at, queued_at)
        VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)`).run(id, input.username, input.operation, JSON.stringify(input.payload ?? {}), secret,
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

  /** Items by status. */
  countByStatus (): Record<SyncStatus, number> {
    const counts: Record<SyncStatus, number> = { pending: 0, processing: 0, done: 0, failed: 0, dead: 0 }
    for (const row of this.#db.prepare('SELECT status, count(*) AS n FROM sync_queue GROUP BY status').all() as Array<{ status: SyncStatus, n: number }>) counts[row.status] = row.n
    return counts
  }
}
