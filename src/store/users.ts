import type { Db } from './db.ts'

/** Where a user row came from: the app's own user, or Keycloak's (a cached credential). */
export type UserSource = 'local' | 'keycloak'

/** A user as stored. */
export interface UserRecord {
  id: number
  username: string
  email: string | null
  firstName: string | null
  lastName: string | null
  /** Encoded scrypt hash, or null when the user has no password here. */
  passwordHash: string | null
  roles: string[]
  groups: string[]
  enabled: boolean
  source: UserSource
  /** Keycloak's id (`sub`) when known. */
  keycloakId: string | null
  /** For cached credentials: when the cached password stops being accepted (ms). */
  credentialExpiresAt: number | null
  passwordChangedAt: number | null
  createdAt: number
  updatedAt: number
}

interface Row {
  id: number
  username: string
  email: string | null
  first_name: string | null
  last_name: string | null
  password_hash: string | null
  roles: string
  groups: string
  enabled: number
  source: UserSource
  keycloak_id: string | null
  credential_expires_at: number | null
  password_changed_at: number | null
  created_at: number
  updated_at: number
}

function fromRow (row: Row): UserRecord {
  return {
    id: row.id,
    username: row.username,
    email: row.email,
    firstName: row.first_name,
    lastName: row.last_name,
    passwordHash: row.password_hash,
    roles: JSON.parse(row.roles) as string[],
    groups: JSON.parse(row.groups) as string[],
    enabled: row.enabled === 1,
    source: row.source,
    keycloakId: row.keycloak_id,
    credentialExpiresAt: row.credential_expires_at,
    passwordChangedAt: row.password_changed_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at
  }
}

/** What creating a local user takes. */
export interface NewUser {
  username: string
  email?: string | null
  firstName?: string | null
  lastName?: string | null
  passwordHash: string | null
  roles?: string[]
  groups?: string[]
}

/** A credential Keycloak accepted, kept for logins while it is unreachable. */
export interface CachedCredential {
  username: string
  passwordHash: string
  keycloakId: string | null
  email: string | null
  roles: string[]
  groups: string[]
  expiresAt: number
}

/** The `users` table: local users, and cached credentials of Keycloak users. */
export class UsersRepository {
  readonly #db: Db

  constructor (db: Db) {
    this.#db = db
  }

  /** A user by name (case-insensitive), or null. */
  find (username: string): UserRecord | null {
    const row = this.#db.prepare('SELECT * FROM users WHERE username = ?').get(username) as Row | undefined
    return row === undefined ? null : fromRow(row)
  }

  /** Every user, by name. */
  list (): UserRecord[] {
    return (this.#db.prepare('SELECT * FROM users ORDER BY username').all() as Row[]).map(fromRow)
  }

  /** Creates a local user; throws on a duplicate name (SQLITE_CONSTRAINT_UNIQUE). */
  create (user: NewUser, now: number): UserRecord {
    const result = this.#db.prepare(`INSERT INTO users (username, email, first_name, last_name, password_hash, roles, groups, source, password_changed_at, created_at, updated_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, 'local', ?, ?, ?)`).run(
      user.username, user.email ?? null, user.firstName ?? null, user.lastName ?? null, user.passwordHash,
      JSON.stringify(user.roles ?? []), JSON.stringify(user.groups ?? []), user.passwordHash === null ? null : now, now, now)
    return this.findById(Number(result.lastInsertRowid)) as UserRecord
  }

  /** A user by row id. */
  findById (id: number): UserRecord | null {
    const row = this.#db.prepare('SELECT * FROM users WHERE id = ?').get(id) as Row | undefined
    return row === undefined ? null : fromRow(row)
  }

  /** Replaces a user's password hash. Returns false when there is no such user. */
  setPassword (username: string, passwordHash: string, now: number): boolean {
    return this.#db.prepare('UPDATE users SET password_hash = ?, password_changed_at = ?, updated_at = ? WHERE username = ?').run(passwordHash, now, now, username).changes === 1
  }

  /** Enables or disables a user. Returns false when there is no such user. */
  setEnabled (username: string, enabled: boolean, now: number): boolean {
    return this.#db.prepare('UPDATE users SET enabled = ?, updated_at = ? WHERE username = ?').run(enabled ? 1 : 0, now, username).changes === 1
  }

  /** Records the Keycloak id a local user was linked to. */
  setKeycloakId (username: string, keycloakId: string, now: number): void {
    this.#db.prepare('UPDATE users SET keycloak_id = ?, updated_at = ? WHERE username = ?').run(keycloakId, now, username)
  }

  /**
   * Stores (or refreshes) the cached credential of a Keycloak user. A local user of the same
   * name is never overwritten: with auth.primary keycloak there are none, and with local the
   * local row is the truth.
   */
  cacheCredential (c: CachedCredential, now: number): void {
    this.#db.prepare(`INSERT INTO users (username, email, password_hash, roles, groups, source, keycloak_id, credential_expires_at, password_changed_at, created_at, updated_at)
      VALUES (?, ?, ?, ?, ?, 'keycloak', ?, ?, ?, ?, ?)
      ON CONFLICT (username) DO UPDATE SET email = excluded.email, password_hash = excluded.password_hash, roles = excluded.roles, groups = excluded.groups,
        keycloak_id = excluded.keycloak_id, credential_expires_at = excluded.credential_expires_at, password_changed_at = excluded.password_changed_at,
        updated_at = excluded.updated_at, enabled = 1
      WHERE users.source = 'keycloak'`).run(c.username, c.email, c.passwordHash, JSON.stringify(c.roles), JSON.stringify(c.groups), c.keycloakId, c.expiresAt, now, now, now)
  }

  /** Forgets a cached credential (Keycloak refused the password, or the user was disabled there). */
  dropCachedCredential (username: string): void {
    this.#db.prepare("DELETE FROM users WHERE username = ? AND source = 'keycloak'").run(username)
  }
}
