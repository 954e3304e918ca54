import type { KeyRing } from './crypto.ts'
import type { Db } from './db.ts'

/** A session's Keycloak tokens, decrypted. */
export interface CachedTokens {
  sessionId: string
  username: string
  accessToken: string
  refreshToken: string | null
  idToken: string | null
  /** `exp` of the access token (ms). */
  accessExpiresAt: number
  /** When the refresh token stops working, when Keycloak said (ms). */
  refreshExpiresAt: number | null
  /** When these tokens were cached: the grace period counts from here (ms). */
  cachedAt: number
  refreshedAt: number | null
}

interface Row {
  session_id: string
  username: string
  access_token_enc: Buffer
  refresh_token_enc: Buffer | null
  id_token_enc: Buffer | null
  access_expires_at: number
  refresh_expires_at: number | null
  cached_at: number
  refreshed_at: number | null
}

/**
 * The `token_cache` table: each session's Keycloak tokens, every one of them encrypted with
 * the key ring (DESIGN §3 asks for refresh tokens; access and ID tokens are bearer
 * credentials too). Each value is bound to its session and column, so a ciphertext moved to
 * another row does not decrypt.
 */
export class TokenCacheRepository {
  readonly #db: Db
  readonly #ring: KeyRing

  constructor (db: Db, ring: KeyRing) {
    this.#db = db
    this.#ring = ring
  }

  /** Stores (replaces) a session's tokens. */
  put (tokens: CachedTokens): void {
    const enc = (value: string | null, column: string): Buffer | null => value === null ? null : this.#ring.encrypt(value, `token_cache:${tokens.sessionId}:${column}`)
    this.#db.prepare(`INSERT INTO token_cache (session_id, username, access_token_enc, refresh_token_enc, id_token_enc, access_expires_at, refresh_expires_at, cached_at, refreshed_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (session_id) DO UPDATE SET access_token_enc = excluded.access_token_enc, refresh_token_enc = excluded.refresh_token_enc,
        id_token_enc = excluded.id_token_enc, access_expires_at = excluded.access_expires_at, refresh_expires_at = excluded.refresh_expires_at,
        cached_at = excluded.cached_at, refreshed_at = excluded.refreshed_at`)
      .run(tokens.sessionId, tokens.username, enc(tokens.accessToken, 'access'), enc(tokens.refreshToken, 'refresh'), enc(tokens.idToken, 'id'),
        tokens.accessExpiresAt, tokens.refreshExpiresAt, tokens.cachedAt, tokens.refreshedAt)
  }

  /** A session's tokens, or null (none, or written with a key no longer in the ring). */
  get (sessionId: string): CachedTokens | null {
    const row = this.#db.prepare('SELECT * FROM token_cache WHERE session_id = ?').get(sessionId) as Row | undefined
    if (row === undefined) return null
    try {
      const dec = (blob: Buffer | null, column: string): string | null => blob === null ? null : this.#ring.decryptText(blob, `token_cache:${sessionId}:${column}`)
      return {
        sessionId,
        username: row.username,
        accessToken: dec(row.access_token_enc, 'access') as string,
        refreshToken: dec(row.refresh_token_enc, 'refresh'),
        idToken: dec(row.id_token_enc, 'id'),
        accessExpiresAt: row.access_expires_at,
        refreshExpiresAt: row.refresh_expires_at,
        cachedAt: row.cached_at,
        refreshedAt: row.refreshed_at
      }
    } catch {
      return null
    }
  }

  /** Forgets a session's tokens. */
  delete (sessionId: string): void {
    this.#db.prepare('DELETE FROM token_cache WHERE session_id = ?').run(sessionId)
  }

  /** Sessions whose access token expires before `before` and that hold a refresh token. */
  expiringBefore (before: number, limit: number): string[] {
    return (this.#db.prepare(`SELECT t.session_id FROM token_cache t JOIN sessions s ON s.id = t.session_id
      WHERE s.ended_at IS NULL AND t.refresh_token_enc IS NOT NULL AND t.access_expires_at <= ? ORDER BY t.access_expires_at LIMIT ?`)
      .all(before, limit) as Array<{ session_id: string }>).map((r) => r.session_id)
  }

  /** Cached token sets still inside the grace period (of live sessions). */
  countUsable (now: number, graceMs: number): number {
    return (this.#db.prepare(`SELECT count(*) AS n FROM token_cache t JOIN sessions s ON s.id = t.session_id
      WHERE s.ended_at IS NULL AND (t.access_expires_at > ? OR t.cached_at > ?)`).get(now, now - graceMs) as { n: number }).n
  }

  /** Removes tokens past their grace period and those of ended sessions; returns how many. */
  cleanup (now: number, graceMs: number): number {
    return this.#db.prepare(`DELETE FROM token_cache WHERE (access_expires_at <= ? AND cached_at <= ?)
      OR session_id IN (SELECT id FROM sessions WHERE ended_at IS NOT NULL)`).run(now, now - graceMs).changes
  }
}
