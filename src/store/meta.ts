import type { Db } from './db.ts'

/** A JSON value kept under a key in the `meta` table, with when it was written. */
export interface MetaRecord<T> {
  value: T
  updatedAt: number
}

/** The `meta` table: small facts that outlive a restart (last good Keycloak discovery…). */
export class MetaRepository {
  readonly #get: import('better-sqlite3').Statement<[string], { value: string, updated_at: number }>
  readonly #put: import('better-sqlite3').Statement<[string, string, number]>

  constructor (db: Db) {
    this.#get = db.prepare('SELECT value, updated_at FROM meta WHERE key = ?')
    this.#put = db.prepare('INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at')
  }

  /** The value under `key`, or null when absent or not JSON. */
  get<T> (key: string): MetaRecord<T> | null {
    const row = this.#get.get(key)
    if (row === undefined) return null
    try {
      return { value: JSON.parse(row.value) as T, updatedAt: row.updated_at }
    } catch {
      return null
    }
  }

  /** Stores `value` (as JSON) under `key`. */
  put (key: string, value: unknown, now: number): void {
    this.#put.run(key, JSON.stringify(value), now)
  }
}
