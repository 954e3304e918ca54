import type { JSONWebKeySet } from 'jose'
import type { Db } from './db.ts'

/** The last good JWKS of an issuer, as stored. */
export interface StoredJwks {
  jwks: JSONWebKeySet
  /** When it was fetched, in milliseconds since the epoch. */
  fetchedAt: number
  /** Back-channel server it came from. */
  server: string | null
}

/** The `jwks_cache` table: one row per issuer, the last JWKS Keycloak served. */
export class JwksCacheRepository {
  readonly #get: import('better-sqlite3').Statement<[string], { jwks: string, fetched_at: number, server: string | null }>
  readonly #put: import('better-sqlite3').Statement<[string, string, number, string | null]>

  constructor (db: Db) {
    this.#get = db.prepare('SELECT jwks, fetched_at, server FROM jwks_cache WHERE issuer = ?')
    this.#put = db.prepare(`INSERT INTO jwks_cache (issuer, jwks, fetched_at, server) VALUES (?, ?, ?, ?)
      ON CONFLICT (issuer) DO UPDATE SET jwks = excluded.jwks, fetched_at = excluded.fetched_at, server = excluded.server`)
  }

  /** The stored JWKS, or null when none was ever saved or the row does not parse. */
  load (issuer: string): StoredJwks | null {
    const row = this.#get.get(issuer)
    if (row === undefined) return null
    try {
      const jwks = JSON.parse(row.jwks) as JSONWebKeySet
      if (!Array.isArray(jwks.keys)) return null
      return { jwks, fetchedAt: row.fetched_at, server: row.server }
    } catch {
      return null
    }
  }

  /** Replaces the stored JWKS of `issuer`. */
  save (issuer: string, value: StoredJwks): void {
    this.#put.run(issuer, JSON.stringify(value.jwks), value.fetchedAt, value.server)
  }
}
