import type { Db } from './db.ts'

/** What waits in the outbox: see `004-shared-store.sql`. */
export type OutboxOperation = 'upsert' | 'end' | 'end_where'

/** One entry, in the order it was written. */
export interface OutboxEntry {
  seq: number
  operation: OutboxOperation
  payload: Record<string, unknown>
  createdAt: number
}

/**
 * The `store_outbox` table: the session writes Redis did not take (it was unreachable), kept
 * in this replica's SQLite file and replayed in order when Redis is back. Entries are claimed
 * under a lease, so two processes on one file never replay one at once; every operation is
 * idempotent, so one replayed again after a crash does no harm.
 */
export class StoreOutbox {
  readonly #db: Db
  readonly #count: import('better-sqlite3').Statement<[], number>

  constructor (db: Db) {
    this.#db = db
    this.#count = db.prepare<[], number>('SELECT count(*) FROM store_outbox').pluck()
  }

  /** Keeps one write for replay. */
  add (operation: OutboxOperation, payload: Record<string, unknown>, now: number): void {
    this.#db.prepare('INSERT INTO store_outbox (operation, payload, created_at) VALUES (?, ?, ?)').run(operation, JSON.stringify(payload), now)
  }

  /** Entries waiting. */
  count (): number {
    return this.#count.get() as number
  }

  /** Claims the oldest `limit` entries not leased by another process, for `leaseMs`. */
  claim (now: number, limit: number, leaseMs: number): OutboxEntry[] {
    return this.#db.transaction((): OutboxEntry[] => {
      const rows = this.#db.prepare('SELECT seq, operation, payload, created_at FROM store_outbox WHERE lease_until <= ? ORDER BY seq LIMIT ?').all(now, limit) as Array<{ seq: number, operation: OutboxOperation, payload: string, created_at: number }>
      const lease = this.#db.prepare('UPDATE store_outbox SET lease_until = ? WHERE seq = ?')
      for (const row of rows) lease.run(now + leaseMs, row.seq)
      return rows.map((row) => ({ seq: row.seq, operation: row.operation, payload: JSON.parse(row.payload) as Record<string, unknown>, createdAt: row.created_at }))
    }).immediate()
  }

  /** Gives claimed entries back at once (a replay that failed part-way: the next try takes them). */
  release (seqs: readonly number[]): void {
    const release = this.#db.prepare('UPDATE store_outbox SET lease_until = 0 WHERE seq = ?')
    this.#db.transaction(() => { for (const seq of seqs) release.run(seq) })()
  }

  /** Forgets a replayed entry. */
  done (seq: number): void {
    this.#db.prepare('DELETE FROM store_outbox WHERE seq = ?').run(seq)
  }
}
