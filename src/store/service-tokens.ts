import type { Statement } from 'better-sqlite3'
import type { Db } from './db.ts'

/** A service token's row, without its hashes (which never leave this module but for the check). */
export interface ServiceTokenRecord {
  name: string
  roles: string[]
  description: string | null
  createdAt: number
  /** Lifetime of each generation, in days. */
  lifetimeDays: number
  /** When the current token stops working (ms). */
  expiresAt: number
  /** Public identifier of the current token. */
  currentId: string
  currentCreatedAt: number
  currentLastUsedAt: number | null
  /** Identifier of the previous token while it is kept (until cleanup), else null. */
  previousId: string | null
  /** When the previous token stops working (ms). */
  previousValidUntil: number | null
  previousLastUsedAt: number | null
  rotatedAt: number | null
  /** Auto-rotate this many days before expiry; null: never. */
  autoRotateDays: number | null
  revokedAt: number | null
}

/** Which generation of a token an identifier names. */
export type Generation = 'current' | 'previous'

/** What a lookup by identifier finds: the row, which generation, and that generation's digest. */
export interface IdentifierMatch {
  record: ServiceTokenRecord
  generation: Generation
  digest: Buffer
}

interface Row {
  name: string
  roles: string
  description: string | null
  created_at: number
  lifetime_days: number
  expires_at: number
  current_id: string
  current_hash: Buffer
  current_created_at: number
  current_last_used_at: number | null
  previous_id: string | null
  previous_hash: Buffer | null
  previous_valid_until: number | null
  previous_last_used_at: number | null
  rotated_at: number | null
  auto_rotate_days: number | null
  revoked_at: number | null
}

function fromRow (row: Row): ServiceTokenRecord {
  return {
    name: row.name,
    roles: JSON.parse(row.roles) as string[],
    description: row.description,
    createdAt: row.created_at,
    lifetimeDays: row.lifetime_days,
    expiresAt: row.expires_at,
    currentId: row.current_id,
    currentCreatedAt: row.current_created_at,
    currentLastUsedAt: row.current_last_used_at,
    previousId: row.previous_id,
    previousValidUntil: row.previous_valid_until,
    previousLastUsedAt: row.previous_last_used_at,
    rotatedAt: row.rotated_at,
    autoRotateDays: row.auto_rotate_days,
    revokedAt: row.revoked_at
  }
}

/** What a new token's row holds. */
export interface NewServiceToken {
  name: string
  roles: readonly string[]
  description: string | null
  lifetimeDays: number
  autoRotateDays: number | null
  id: string
  digest: Buffer
}

// Bumped in the same transaction as every change that can take a token's validity away or
// give a new one (create, rotate, revoke, cleanup), so another connection notices it by one
// row read, and only after `PRAGMA data_version` says someone else wrote (as sessions do).
const BUMP_CHANGES = `INSERT INTO meta (key, value, updated_at) VALUES ('service_token_changes', '1', ?)
  ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1, updated_at = excluded.updated_at`

/**
 * The `service_tokens` table. Writes that change what a token is worth bump a counter in
 * `meta` (see {@link changes}); last-used times do not (they change nothing a cache holds).
 */
export class ServiceTokensRepository {
  readonly #db: Db
  readonly #dataVersion: Statement<[], number>
  readonly #changes: Statement<[], string>
  readonly #byCurrent: Statement<[string], Row>
  readonly #byPrevious: Statement<[string], Row>

  constructor (db: Db) {
    this.#db = db
    this.#dataVersion = db.prepare<[], number>('PRAGMA data_version').pluck()
    this.#changes = db.prepare<[], string>("SELECT value FROM meta WHERE key = 'service_token_changes'").pluck()
    this.#byCurrent = db.prepare<[string], Row>('SELECT * FROM service_tokens WHERE current_id = ?')
    this.#byPrevious = db.prepare<[string], Row>('SELECT * FROM service_tokens WHERE previous_id = ?')
  }

  /** `PRAGMA data_version`: moves when another connection commits (see SessionsRepository). */
  dataVersion (): number {
    return this.#dataVersion.get() as number
  }

  /** How many validity changes any connection made (0 before the first). */
  changes (): number {
    return Number(this.#changes.get() ?? 0)
  }

  /** The token generation an identifier names, with its digest, or null. */
  findByIdentifier (id: string): IdentifierMatch | null {
    const current = this.#byCurrent.get(id)
    if (current !== undefined) return { record: fromRow(current), generation: 'current', digest: current.current_hash }
    const previous = this.#byPrevious.get(id)
    if (previous?.previous_hash != null) return { record: fromRow(previous), generation: 'previous', digest: previous.previous_hash }
    return null
  }

  /** One token by name, or null. */
  find (name: string): ServiceTokenRecord | null {
    const row = this.#db.prepare<[string], Row>('SELECT * FROM service_tokens WHERE name = ?').get(name)
    return row === undefined ? null : fromRow(row)
  }

  /** Every token, by name. */
  list (): ServiceTokenRecord[] {
    return this.#db.prepare<[], Row>('SELECT * FROM service_tokens ORDER BY name').all().map(fromRow)
  }

  /** Stores a new token (replacing a revoked row of the same name). */
  insert (token: NewServiceToken, now: number): void {
    this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM service_tokens WHERE name = ? AND revoked_at IS NOT NULL').run(token.name)
      this.#db.prepare(`INSERT INTO service_tokens (name, roles, description, created_at, lifetime_days, expires_at, current_id, current_hash, current_created_at, auto_rotate_days)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(token.name, JSON.stringify(token.roles), token.description, now, token.lifetimeDays,
        now + token.lifetimeDays * 86_400_000, token.id, token.digest, now, token.autoRotateDays)
      this.#db.prepare(BUMP_CHANGES).run(now)
    })()
  }

  /**
   * Makes a new current token; the current one becomes the previous, valid until
   * `previousValidUntil` (any older previous one stops at once). Only when the current
   * identifier is still `expectedCurrentId` and the token is not revoked: returns whether
   * it rotated (false: someone else rotated or revoked it first).
   */
  rotate (name: string, expectedCurrentId: string, next: { id: string, digest: Buffer }, previousValidUntil: number, now: number): boolean {
    return this.#db.transaction(() => {
      const changed = this.#db.prepare(`UPDATE service_tokens SET
          previous_id = current_id, previous_hash = current_hash, previous_valid_until = ?, previous_last_used_at = current_last_used_at,
          current_id = ?, current_hash = ?, current_created_at = ?, current_last_used_at = NULL,
          expires_at = ? + lifetime_days * 86400000, rotated_at = ?
        WHERE name = ? AND current_id = ? AND revoked_at IS NULL`).run(previousValidUntil, next.id, next.digest, now, now, now, name, expectedCurrentId).changes === 1
      if (changed) this.#db.prepare(BUMP_CHANGES).run(now)
      return changed
    })()
  }

  /**
   * Takes back a rotation whose new token could not be delivered (automatic rotation): the
   * previous token becomes current again, with the expiry it had. Only while `newId` is
   * still current. Returns whether it did.
   */
  undoRotation (name: string, newId: string, restoredExpiresAt: number, now: number): boolean {
    return this.#db.transaction(() => {
      const changed = this.#db.prepare(`UPDATE service_tokens SET
          current_id = previous_id, current_hash = previous_hash, current_created_at = coalesce(rotated_at, current_created_at), current_last_used_at = previous_last_used_at,
          expires_at = ?, previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL, previous_last_used_at = NULL, rotated_at = NULL
        WHERE name = ? AND current_id = ? AND previous_id IS NOT NULL`).run(restoredExpiresAt, name, newId).changes === 1
      if (changed) this.#db.prepare(BUMP_CHANGES).run(now)
      return changed
    })()
  }

  /** Revokes a token, both generations. Returns whether it was live. */
  revoke (name: string, now: number): boolean {
    return this.#db.transaction(() => {
      const changed = this.#db.prepare('UPDATE service_tokens SET revoked_at = ?, previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL WHERE name = ? AND revoked_at IS NULL')
        .run(now, name).changes === 1
      if (changed) this.#db.prepare(BUMP_CHANGES).run(now)
      return changed
    })()
  }

  /** Ends the previous token's grace period now. Returns whether there was one still valid. */
  revokePrevious (name: string, now: number): boolean {
    return this.#db.transaction(() => {
      const row = this.find(name)
      if (row === null || row.previousId === null) return false
      this.#db.prepare('UPDATE service_tokens SET previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL, previous_last_used_at = NULL WHERE name = ?').run(name)
      this.#db.prepare(BUMP_CHANGES).run(now)
      return (row.previousValidUntil ?? 0) > now
    })()
  }

  /**
   * Records a use of the token generation `id` names, whichever it is now (a use queued
   * before a rotation is written after it, to the previous token).
   */
  touch (id: string, at: number): void {
    this.#db.prepare('UPDATE service_tokens SET current_last_used_at = max(coalesce(current_last_used_at, 0), ?) WHERE current_id = ?').run(at, id)
    this.#db.prepare('UPDATE service_tokens SET previous_last_used_at = max(coalesce(previous_last_used_at, 0), ?) WHERE previous_id = ?').run(at, id)
  }

  /**
   * Marks the first use of the current generation: true for exactly one caller (of every
   * process on the file), the one that writes the audit entry.
   */
  markFirstUse (id: string, at: number): boolean {
    return this.#db.prepare('UPDATE service_tokens SET current_last_used_at = ? WHERE current_id = ? AND current_last_used_at IS NULL').run(at, id).changes === 1
  }

  /**
   * Forgets previous tokens past their grace period, and deletes tokens revoked, or expired,
   * before `purgeBefore`. Returns how many of each.
   */
  cleanup (now: number, purgeBefore: number): { previousCleared: number, purged: number } {
    return this.#db.transaction(() => {
      const previousCleared = this.#db.prepare('UPDATE service_tokens SET previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL, previous_last_used_at = NULL WHERE previous_id IS NOT NULL AND previous_valid_until <= ?')
        .run(now).changes
      const purged = this.#db.prepare('DELETE FROM service_tokens WHERE (revoked_at IS NOT NULL AND revoked_at < ?) OR (revoked_at IS NULL AND expires_at < ?)').run(purgeBefore, purgeBefore).changes
      if (previousCleared + purged > 0) this.#db.prepare(BUMP_CHANGES).run(now)
      return { previousCleared, purged }
    })()
  }
}
