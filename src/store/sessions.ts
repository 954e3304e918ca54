import type { Identity } from '../identity.ts'
import { internList, internOrNull, internString } from '../intern.ts'
import type { Db } from './db.ts'

/** How a session's person was authenticated (DESIGN §1); `token` is for bearer calls only. */
export type SessionMode = 'keycloak' | 'cached' | 'local'

/** A session as stored. Its secret is never stored, only the SHA-256 of it. */
export interface SessionRecord {
  /** Public id: shown by the CLI and in logs, useless as a credential. */
  id: string
  username: string
  /** Keycloak `sub`, when known. */
  subject: string | null
  mode: SessionMode
  /** Keycloak's session id (`sid`), for back-channel logout. */
  keycloakSid: string | null
  /** Who the session is, as the app's headers say it (roles, groups, email…). */
  identity: Omit<Identity, 'authMode' | 'accessToken' | 'expiresAt'>
  ip: string | null
  userAgent: string | null
  createdAt: number
  lastSeenAt: number
  /** Absolute end (ms). */
  expiresAt: number
  endedAt: number | null
  endReason: string | null
  /** The person proved a password Gatehouse holds, so the session may outlive its Keycloak part. */
  localBasis: boolean
}

interface Row {
  id: string
  username: string
  subject: string | null
  auth_mode: SessionMode
  keycloak_sid: string | null
  identity: string
  ip: string | null
  user_agent: string | null
  created_at: number
  last_seen_at: number
  expires_at: number
  ended_at: number | null
  end_reason: string | null
  local_basis: number
}

/**
 * A session's identity as stored (JSON), its names and lists shared with every other session
 * holding the same ones: ten thousand cached sessions of a few hundred people need not hold
 * ten thousand copies of the same roles, names and addresses.
 */
export function parseStoredIdentity (json: string): SessionRecord['identity'] {
  const identity = JSON.parse(json) as SessionRecord['identity']
  if (typeof identity.user === 'string') identity.user = internString(identity.user)
  if (typeof identity.preferredUsername === 'string') identity.preferredUsername = internString(identity.preferredUsername)
  if (typeof identity.email === 'string') identity.email = internString(identity.email)
  if (Array.isArray(identity.roles)) identity.roles = internList(identity.roles)
  if (Array.isArray(identity.groups)) identity.groups = internList(identity.groups)
  return identity
}

function fromRow (row: Row): SessionRecord {
  return {
    id: row.id,
    username: internString(row.username),
    subject: internOrNull(row.subject),
    mode: internString(row.auth_mode) as SessionMode,
    keycloakSid: row.keycloak_sid,
    identity: parseStoredIdentity(row.identity),
    ip: row.ip === null ? null : internString(row.ip),
    userAgent: row.user_agent === null ? null : internString(row.user_agent),
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
    expiresAt: row.expires_at,
    endedAt: row.ended_at,
    endReason: row.end_reason,
    localBasis: row.local_basis === 1
  }
}

/** Which sessions {@link SessionsRepository.endWhere} ends: those matching any of the ids given. */
export interface SessionMatch {
  keycloakSid?: string
  subject?: string
  username?: string
  /** Only sessions that recorded no Keycloak session id. */
  sidless?: boolean
}

// Bumped in the same transaction as every end of a session, so another connection (the CLI,
// `sync start`, a second process on the same file) can see that one ended by reading a row.
const BUMP_REVOCATIONS = `INSERT INTO meta (key, value, updated_at) VALUES ('session_revocations', '1', ?)
  ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1, updated_at = excluded.updated_at`

/**
 * The `sessions` table. Ended sessions are kept (for `sessions list`) until cleanup. Every
 * statement that ends sessions also bumps a revocation counter (see {@link revocations}).
 */
export class SessionsRepository {
  readonly #db: Db
  readonly #dataVersion: import('better-sqlite3').Statement<[], number>
  readonly #revocations: import('better-sqlite3').Statement<[], string>

  constructor (db: Db) {
    this.#db = db
    this.#dataVersion = db.prepare<[], number>('PRAGMA data_version').pluck()
    this.#revocations = db.prepare<[], string>("SELECT value FROM meta WHERE key = 'session_revocations'").pluck()
  }

  /**
   * SQLite's `PRAGMA data_version` for this connection: it changes when another connection
   * commits anything, and never for this one's own commits. A cheap "did anyone else write?"
   */
  dataVersion (): number {
    return this.#dataVersion.get() as number
  }

  /** How many times sessions were ended, by any connection (0 before the first). */
  revocations (): number {
    return Number(this.#revocations.get() ?? 0)
  }

  /** Stores a new session under the hash of its secret. */
  insert (session: SessionRecord, secretHash: Buffer): void {
    this.#db.prepare(`INSERT INTO sessions (id, secret_hash, username, subject, auth_mode, keycloak_sid, identity, ip, user_agent, created_at, last_seen_at, expires_at, local_basis)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(session.id, secretHash, session.username, session.subject, session.mode, session.keycloakSid,
      JSON.stringify(session.identity), session.ip, session.userAgent, session.createdAt, session.lastSeenAt, session.expiresAt, session.localBasis ? 1 : 0)
  }

  /** The live (not ended) session whose secret hashes to `secretHash`, or null. */
  findLiveByHash (secretHash: Buffer): SessionRecord | null {
    const row = this.#db.prepare('SELECT * FROM sessions WHERE secret_hash = ? AND ended_at IS NULL').get(secretHash) as Row | undefined
    return row === undefined ? null : fromRow(row)
  }

  /** A session by id, ended or not. */
  find (id: string): SessionRecord | null {
    const row = this.#db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined
    return row === undefined ? null : fromRow(row)
  }

  /** Sessions, newest first: of one user or all; live only unless `includeEnded`. */
  list (options: { username?: string, includeEnded?: boolean } = {}): SessionRecord[] {
    const where: string[] = []
    const args: string[] = []
    if (options.username !== undefined) { where.push('username = ?'); args.push(options.username) }
    if (options.includeEnded !== true) where.push('ended_at IS NULL')
    const sql = `SELECT * FROM sessions ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC`
    return (this.#db.prepare(sql).all(...args) as Row[]).map(fromRow)
  }

  /** Writes many last-seen times in one transaction (sliding renewal is batched). */
  touchMany (touches: ReadonlyMap<string, number>): void {
    const update = this.#db.prepare('UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?) WHERE id = ? AND ended_at IS NULL')
    this.#db.transaction(() => { for (const [id, at] of touches) update.run(at, id) })()
  }

  /**
   * Changes a live session's mode and identity (a refresh, a fall to cached or local). With a
   * `fence`, only when no larger fence has written to the session; returns whether it changed.
   */
  update (id: string, mode: SessionMode, identity: SessionRecord['identity'], subject: string | null, keycloakSid: string | null, fence?: number): boolean {
    if (fence === undefined) {
      return this.#db.prepare('UPDATE sessions SET auth_mode = ?, identity = ?, subject = ?, keycloak_sid = ? WHERE id = ? AND ended_at IS NULL')
        .run(mode, JSON.stringify(identity), subject, keycloakSid, id).changes === 1
    }
    return this.#db.prepare('UPDATE sessions SET auth_mode = ?, identity = ?, subject = ?, keycloak_sid = ?, fence = ? WHERE id = ? AND ended_at IS NULL AND fence <= ?')
      .run(mode, JSON.stringify(identity), subject, keycloakSid, fence, id, fence).changes === 1
  }

  /**
   * Writes a copy of a session kept elsewhere (the shared store), as it is there: inserted, or
   * its changing fields updated. Never revives an ended session, never moves last-seen back.
   */
  upsertCopy (session: SessionRecord, secretHash: Buffer): void {
    this.#db.prepare(`INSERT INTO sessions (id, secret_hash, username, subject, auth_mode, keycloak_sid, identity, ip, user_agent, created_at, last_seen_at, expires_at, ended_at, end_reason, local_basis)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (id) DO UPDATE SET auth_mode = excluded.auth_mode, identity = excluded.identity, subject = excluded.subject, keycloak_sid = excluded.keycloak_sid,
        last_seen_at = max(last_seen_at, excluded.last_seen_at), ended_at = coalesce(ended_at, excluded.ended_at), end_reason = coalesce(end_reason, excluded.end_reason)`)
      .run(session.id, secretHash, session.username, session.subject, session.mode, session.keycloakSid, JSON.stringify(session.identity), session.ip, session.userAgent,
        session.createdAt, session.lastSeenAt, session.expiresAt, session.endedAt, session.endReason, session.localBasis ? 1 : 0)
  }

  /** The stored SHA-256 of a session's secret, or null. */
  secretHashOf (id: string): Buffer | null {
    return (this.#db.prepare('SELECT secret_hash FROM sessions WHERE id = ?').pluck().get(id) as Buffer | undefined) ?? null
  }

  /**
   * Ends one session and deletes its cached tokens (an ended session's tokens must not
   * outlive it, whoever ends it: a request, the CLI, a back-channel logout). Returns whether
   * it was live.
   */
  end (id: string, reason: string, now: number): boolean {
    return this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM token_cache WHERE session_id = ?').run(id)
      const ended = this.#db.prepare('UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL').run(now, reason, id).changes === 1
      if (ended) this.#db.prepare(BUMP_REVOCATIONS).run(now)
      return ended
    })()
  }

  /**
   * Ends every live session matching a Keycloak session id, subject or user name (any of
   * them), except the session `except`, with their tokens; returns their ids.
   */
  endWhere (match: SessionMatch, reason: string, now: number, except?: string): string[] {
    const clauses: string[] = []
    const args: string[] = []
    if (match.keycloakSid !== undefined) { clauses.push('keycloak_sid = ?'); args.push(match.keycloakSid) }
    if (match.subject !== undefined) { clauses.push('subject = ?'); args.push(match.subject) }
    if (match.username !== undefined) { clauses.push('username = ?'); args.push(match.username) }
    if (clauses.length === 0) return []
    let where = `(${clauses.join(' OR ')}) AND ended_at IS NULL`
    if (match.sidless === true) where += ' AND keycloak_sid IS NULL'
    if (except !== undefined) { where += ' AND id <> ?'; args.push(except) }
    return this.#db.transaction(() => {
      const ids = (this.#db.prepare(`SELECT id FROM sessions WHERE ${where}`).all(...args) as Array<{ id: string }>).map((r) => r.id)
      if (ids.length === 0) return ids
      this.#db.prepare(`DELETE FROM token_cache WHERE session_id IN (SELECT id FROM sessions WHERE ${where})`).run(...args)
      this.#db.prepare(`UPDATE sessions SET ended_at = ?, end_reason = ? WHERE ${where}`).run(now, reason, ...args)
      this.#db.prepare(BUMP_REVOCATIONS).run(now)
      return ids
    })()
  }

  /** Ends sessions past their absolute or idle lifetime; returns how many. */
  expire (now: number, idleMs: number): number {
    return this.#db.transaction(() => {
      const { changes } = this.#db.prepare("UPDATE sessions SET ended_at = ?, end_reason = 'expired' WHERE ended_at IS NULL AND (expires_at <= ? OR last_seen_at <= ?)").run(now, now, now - idleMs)
      if (changes > 0) this.#db.prepare(BUMP_REVOCATIONS).run(now)
      return changes
    })()
  }

  /** Deletes sessions that ended more than `olderThanMs` ago (live ones never); returns how many. */
  purge (now: number, olderThanMs: number): number {
    return this.#db.prepare('DELETE FROM sessions WHERE ended_at IS NOT NULL AND ended_at <= ?').run(now - olderThanMs).changes
  }

  /** Live sessions by mode. */
  countByMode (): Record<SessionMode, number> {
    const counts: Record<SessionMode, number> = { keycloak: 0, cached: 0, local: 0 }
    for (const row of this.#db.prepare('SELECT auth_mode, count(*) AS n FROM sessions WHERE ended_at IS NULL GROUP BY auth_mode').all() as Array<{ auth_mode: SessionMode, n: number }>) counts[row.auth_mode] = row.n
    return counts
  }
}
