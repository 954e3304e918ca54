import type { Db } from './db.ts'

/** Who a reset token was issued to (only ever a local user with an e-mail address). */
export interface ResetTarget {
  username: string
  email: string
}

/** A token as found by its hash. */
export interface ResetToken {
  username: string
  expiresAt: number
  usedAt: number | null
}

/**
 * The `password_reset_tokens` and `password_reset_requests` tables. Tokens are stored as their
 * SHA-256 only (DESIGN §3): the database never holds a usable link.
 */
export class PasswordResetRepository {
  readonly #db: Db

  constructor (db: Db) {
    this.#db = db
  }

  /**
   * Counts the requests for `identifier` and from `ip` since `since`, and records this one,
   * in one IMMEDIATE transaction (concurrent requests each see the others). Returns the
   * counts before this request, or null (and records nothing) when either is at its limit.
   */
  admit (identifier: string, ip: string | null, now: number, since: number, limits: { perIdentifier: number, perIp: number }): { identifier: number, ip: number } | null {
    return this.#db.transaction(() => {
      const byIdentifier = (this.#db.prepare('SELECT count(*) AS n FROM password_reset_requests WHERE identifier = ? AND requested_at > ?').get(identifier, since) as { n: number }).n
      const byIp = ip === null ? 0 : (this.#db.prepare('SELECT count(*) AS n FROM password_reset_requests WHERE ip = ? AND requested_at > ?').get(ip, since) as { n: number }).n
      if (byIdentifier >= limits.perIdentifier || byIp >= limits.perIp) return null
      this.#db.prepare('INSERT INTO password_reset_requests (identifier, ip, requested_at) VALUES (?, ?, ?)').run(identifier, ip, now)
      return { identifier: byIdentifier, ip: byIp }
    }).immediate()
  }

  /** When the oldest request still counting for `identifier` or `ip` stops counting (ms), for Retry-After. */
  nextAdmission (identifier: string, ip: string | null, since: number, windowMs: number): number {
    const oldest = this.#db.prepare('SELECT min(requested_at) AS at FROM password_reset_requests WHERE (identifier = ? OR ip = ?) AND requested_at > ?').get(identifier, ip, since) as { at: number | null }
    return (oldest.at ?? since) + windowMs
  }

  /**
   * Issues a token for the local, enabled user with an e-mail address whose name (or else
   * whose address) is `identifier`, and withdraws that user's earlier unused tokens. The
   * same two statements run whether or not there is such a user, so the request does the
   * same work either way; returns who it was issued to, or null.
   */
  issue (identifier: string, tokenHash: Buffer, now: number, expiresAt: number, perUser: { since: number, max: number }): ResetTarget | null {
    return this.#db.transaction((): ResetTarget | null => {
      // A user who was sent `max` links within the window (asked for by name and by address
      // alike) gets none now, and the request is answered the same.
      const target = this.#db.prepare(`INSERT INTO password_reset_tokens (token_hash, username, created_at, expires_at)
        SELECT @hash, username, @now, @expires FROM users
        WHERE (username = @id OR email = @id COLLATE NOCASE) AND source = 'local' AND enabled = 1 AND email IS NOT NULL AND email != ''
          AND (SELECT count(*) FROM password_reset_tokens t WHERE t.username = users.username AND t.created_at > @since) < @max
        ORDER BY username = @id DESC, id LIMIT 1
        RETURNING username, (SELECT email FROM users u WHERE u.username = password_reset_tokens.username) AS email`).get({ hash: tokenHash, now, expires: expiresAt, id: identifier, since: perUser.since, max: perUser.max }) as ResetTarget | undefined
      this.#db.prepare('UPDATE password_reset_tokens SET used_at = @now WHERE username = @username AND used_at IS NULL AND token_hash != @hash')
        .run({ now, username: target?.username ?? null, hash: tokenHash })
      return target ?? null
    }).immediate()
  }

  /** A token by its hash, used or not, or null. */
  find (tokenHash: Buffer): ResetToken | null {
    const row = this.#db.prepare('SELECT username, expires_at, used_at FROM password_reset_tokens WHERE token_hash = ?').get(tokenHash) as { username: string, expires_at: number, used_at: number | null } | undefined
    return row === undefined ? null : { username: row.username, expiresAt: row.expires_at, usedAt: row.used_at }
  }

  /**
   * Uses a token, once: marks it used if it is unused and unexpired, withdraws the user's
   * other tokens, and runs `then` (the password change) in the same transaction. Returns the
   * user name, or null when the token was not usable (then nothing changes).
   */
  consume (tokenHash: Buffer, now: number, then: (username: string) => void): string | null {
    return this.#db.transaction((): string | null => {
      const row = this.#db.prepare('UPDATE password_reset_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING username').get(now, tokenHash, now) as { username: string } | undefined
      if (row === undefined) return null
      this.#db.prepare('UPDATE password_reset_tokens SET used_at = ? WHERE username = ? AND used_at IS NULL').run(now, row.username)
      then(row.username)
      return row.username
    }).immediate()
  }

  /** Deletes tokens expired or used before `before`, and requests older than it; returns how many rows went. */
  purge (before: number): number {
    const tokens = this.#db.prepare('DELETE FROM password_reset_tokens WHERE expires_at < ? OR used_at < ?').run(before, before).changes
    return tokens + this.#db.prepare('DELETE FROM password_reset_requests WHERE requested_at < ?').run(before).changes
  }
}
