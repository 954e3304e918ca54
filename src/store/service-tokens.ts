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
  rev: number
  shared_pending: number
}

/**
 * A token record as Redis holds it (issue 16, store.sessions redis): every field of the row
 * but the per-replica last-used times, digests in hex (the SHA-256 of a token, never a secret),
 * absent fields for nulls. `rev` orders copies of one token (see 006-shared-service-tokens.sql).
 */
export interface SharedTokenRecord {
  name: string
  roles: string[]
  description?: string
  created_at: number
  lifetime_days: number
  expires_at: number
  current_id: string
  current_hash: string
  current_created_at: number
  previous_id?: string
  previous_hash?: string
  previous_valid_until?: number
  rotated_at?: number
  auto_rotate_days?: number
  revoked_at?: number
  rev: number
}

function sharedOf (row: Row): SharedTokenRecord {
  const out: SharedTokenRecord = {
    name: row.name,
    roles: JSON.parse(row.roles) as string[],
    created_at: row.created_at,
    lifetime_days: row.lifetime_days,
    expires_at: row.expires_at,
    current_id: row.current_id,
    current_hash: row.current_hash.toString('hex'),
    current_created_at: row.current_created_at,
    rev: row.rev
  }
  if (row.description !== null) out.description = row.description
  if (row.previous_id !== null && row.previous_hash !== null) {
    out.previous_id = row.previous_id
    out.previous_hash = row.previous_hash.toString('hex')
    if (row.previous_valid_until !== null) out.previous_valid_until = row.previous_valid_until
  }
  if (row.rotated_at !== null) out.rotated_at = row.rotated_at
  if (row.auto_rotate_days !== null) out.auto_rotate_days = row.auto_rotate_days
  if (row.revoked_at !== null) out.revoked_at = row.revoked_at
  return out
}

/** A local copy's shared record and whether it waits to reach Redis. */
export interface LocalSharedRecord {
  record: SharedTokenRecord
  pending: boolean
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
      // The new record's rev follows the revoked one's, so a compare-and-set against it holds.
      const before = this.#db.prepare<[string], number>('SELECT rev FROM service_tokens WHERE name = ? AND revoked_at IS NOT NULL').pluck().get(token.name) ?? 0
      this.#db.prepare('DELETE FROM service_tokens WHERE name = ? AND revoked_at IS NOT NULL').run(token.name)
      this.#db.prepare(`INSERT INTO service_tokens (name, roles, description, created_at, lifetime_days, expires_at, current_id, current_hash, current_created_at, auto_rotate_days, rev, shared_pending)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`).run(token.name, JSON.stringify(token.roles), token.description, now, token.lifetimeDays,
        now + token.lifetimeDays * 86_400_000, token.id, token.digest, now, token.autoRotateDays, before + 1)
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
          expires_at = ? + lifetime_days * 86400000, rotated_at = ?, rev = rev + 1, shared_pending = 1
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
          expires_at = ?, previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL, previous_last_used_at = NULL, rotated_at = NULL, rev = rev + 1, shared_pending = 1
        WHERE name = ? AND current_id = ? AND previous_id IS NOT NULL`).run(restoredExpiresAt, name, newId).changes === 1
      if (changed) this.#db.prepare(BUMP_CHANGES).run(now)
      return changed
    })()
  }

  /** Revokes a token, both generations. Returns whether it was live. */
  revoke (name: string, now: number): boolean {
    return this.#db.transaction(() => {
      const changed = this.#db.prepare('UPDATE service_tokens SET revoked_at = ?, previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL, rev = rev + 1, shared_pending = 1 WHERE name = ? AND revoked_at IS NULL')
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
      this.#db.prepare('UPDATE service_tokens SET previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL, previous_last_used_at = NULL, rev = rev + 1, shared_pending = 1 WHERE name = ?').run(name)
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
      const previousCleared = this.#db.prepare('UPDATE service_tokens SET previous_id = NULL, previous_hash = NULL, previous_valid_until = NULL, previous_last_used_at = NULL, rev = rev + 1, shared_pending = 1 WHERE previous_id IS NOT NULL AND previous_valid_until <= ?')
        .run(now).changes
      const purged = this.#db.prepare('DELETE FROM service_tokens WHERE (revoked_at IS NOT NULL AND revoked_at < ?) OR (revoked_at IS NULL AND expires_at < ?)').run(purgeBefore, purgeBefore).changes
      if (previousCleared + purged > 0) this.#db.prepare(BUMP_CHANGES).run(now)
      return { previousCleared, purged }
    })()
  }

  /** One token as Redis would hold it, with whether it waits to reach Redis, or null. */
  shared (name: string): LocalSharedRecord | null {
    const row = this.#db.prepare<[string], Row>('SELECT * FROM service_tokens WHERE name = ?').get(name)
    return row === undefined ? null : { record: sharedOf(row), pending: row.shared_pending === 1 }
  }

  /** Every token as Redis would hold it. */
  sharedAll (): LocalSharedRecord[] {
    return this.#db.prepare<[], Row>('SELECT * FROM service_tokens ORDER BY name').all().map((row) => ({ record: sharedOf(row), pending: row.shared_pending === 1 }))
  }

  /** How many local changes wait to reach Redis. */
  pendingCount (): number {
    return this.#db.prepare<[], number>('SELECT count(*) FROM service_tokens WHERE shared_pending = 1').pluck().get() as number
  }

  /** Marks a local copy as waiting to reach Redis. */
  markPending (name: string): void {
    this.#db.prepare('UPDATE service_tokens SET shared_pending = 1 WHERE name = ?').run(name)
  }

  /** The change `rev` reached Redis: no longer pending, unless the row changed again since. */
  settled (name: string, rev: number): void {
    this.#db.prepare('UPDATE service_tokens SET shared_pending = 0 WHERE name = ? AND rev = ?').run(name, rev)
  }

  /**
   * Makes the local copy of a token Redis' record (the mirror, issue 16). Last-used times are
   * this replica's own and follow each identifier: after a rotation heard from Redis, the old
   * current token's last use becomes the previous token's.
   */
  mirror (record: SharedTokenRecord, now: number): void {
    this.#db.transaction(() => {
      const local = this.#db.prepare<[string], Row>('SELECT * FROM service_tokens WHERE name = ?').get(record.name)
      const used = new Map<string, number | null>()
      if (local !== undefined) {
        used.set(local.current_id, local.current_last_used_at)
        if (local.previous_id !== null) used.set(local.previous_id, local.previous_last_used_at)
      }
      // Identifiers are unique across rows: a row of another name holding one (impossible but
      // for a copy from before a purge and re-create) gives way to Redis' record.
      this.#db.prepare('DELETE FROM service_tokens WHERE name <> ? AND (current_id IN (?, ?) OR previous_id IN (?, ?))')
        .run(record.name, record.current_id, record.previous_id ?? '', record.current_id, record.previous_id ?? '')
      this.#db.prepare('DELETE FROM service_tokens WHERE name = ?').run(record.name)
      this.#db.prepare(`INSERT INTO service_tokens (name, roles, description, created_at, lifetime_days, expires_at, current_id, current_hash, current_created_at, current_last_used_at,
          previous_id, previous_hash, previous_valid_until, previous_last_used_at, rotated_at, auto_rotate_days, revoked_at, rev, shared_pending)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`).run(
        record.name, JSON.stringify(record.roles), record.description ?? null, record.created_at, record.lifetime_days, record.expires_at,
        record.current_id, Buffer.from(record.current_hash, 'hex'), record.current_created_at, used.get(record.current_id) ?? null,
        record.previous_id ?? null, record.previous_hash === undefined ? null : Buffer.from(record.previous_hash, 'hex'), record.previous_valid_until ?? null,
        record.previous_id === undefined ? null : used.get(record.previous_id) ?? null,
        record.rotated_at ?? null, record.auto_rotate_days ?? null, record.revoked_at ?? null, record.rev)
      this.#db.prepare(BUMP_CHANGES).run(now)
    })()
  }

  /** Forgets the local copy of a token Redis purged (only that copy, not a newer one). Returns whether it did. */
  forget (name: string, createdAt: number, now: number): boolean {
    return this.#db.transaction(() => {
      const done = this.#db.prepare('DELETE FROM service_tokens WHERE name = ? AND created_at <= ? AND shared_pending = 0').run(name, createdAt).changes === 1
      if (done) this.#db.prepare(BUMP_CHANGES).run(now)
      return done
    })()
  }
}
