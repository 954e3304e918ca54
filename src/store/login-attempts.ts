import type { Db } from './db.ts'

/** Where a login attempt came in: Gatehouse's form, or a password grant it made for it. */
export type LoginChannel = 'form' | 'password_grant'

/** Recent failures of one user or one client address. */
export interface FailureWindow {
  count: number
  /** Time of the latest failure (ms), or null. */
  latest: number | null
}

/** Who is attempting a login, and how. */
export interface Attempt {
  username: string | null
  ip: string | null
  channel: LoginChannel
}

/**
 * Seconds a lockout has left given the failure windows of the user and of the address, or
 * null when neither is locked.
 */
export type LockoutRule = (windows: FailureWindow[]) => number | null

/** What {@link LoginAttemptsRepository.reserve} gives: a lockout, or the attempt's row. */
export type Reservation = { lockedForSeconds: number } | { id: number }

/**
 * The `login_attempts` table: failures counted per user and per client address for lockout.
 *
 * An attempt is recorded as a failure before its password is checked ({@link reserve}), and
 * turned into a success afterwards when it was one: so concurrent attempts each see the ones
 * still being checked, and no more than the lockout threshold of password checks can run
 * at once for one user or address. A success resets its user's count (failures before it
 * no longer count for the user) but not its address's: the failures stay in the table.
 */
export class LoginAttemptsRepository {
  readonly #db: Db

  constructor (db: Db) {
    this.#db = db
  }

  /**
   * Checks the lockout and records the attempt as a failure, in one IMMEDIATE transaction, so
   * no other request or process can slip an attempt in between.
   */
  reserve (attempt: Attempt, now: number, since: number, locked: LockoutRule): Reservation {
    return this.#db.transaction((): Reservation => {
      const windows = [attempt.username === null ? { count: 0, latest: null } : this.userFailures(attempt.username, since)]
      if (attempt.ip !== null) windows.push(this.ipFailures(attempt.ip, since))
      const seconds = locked(windows)
      if (seconds !== null) return { lockedForSeconds: seconds }
      return { id: Number(this.#insert(attempt, false, now)) }
    }).immediate()
  }

  /**
   * Settles a reserved attempt: a success is marked as one; a failure stays as reserved; an
   * attempt that checked no password (Keycloak unreachable, nothing to check against) is
   * removed, so an outage locks nobody out.
   */
  settle (id: number, result: 'success' | 'failure' | 'void'): void {
    if (result === 'success') this.#db.prepare('UPDATE login_attempts SET succeeded = 1 WHERE id = ?').run(id)
    else if (result === 'void') this.#db.prepare('DELETE FROM login_attempts WHERE id = ?').run(id)
  }

  /** Records one finished attempt (for attempts that are not reserved first). */
  record (attempt: Attempt & { succeeded: boolean }, now: number): void {
    this.#insert(attempt, attempt.succeeded, now)
  }

  #insert (attempt: Attempt, succeeded: boolean, now: number): number | bigint {
    return this.#db.prepare('INSERT INTO login_attempts (username, ip, channel, succeeded, attempted_at) VALUES (?, ?, ?, ?, ?)')
      .run(attempt.username?.toLowerCase() ?? null, attempt.ip, attempt.channel, succeeded ? 1 : 0, now).lastInsertRowid
  }

  /** Failures of a user (case-insensitive) since `since` and since the user's last success. */
  userFailures (username: string, since: number): FailureWindow {
    const name = username.toLowerCase()
    return this.#db.prepare(`SELECT count(*) AS count, max(attempted_at) AS latest FROM login_attempts
      WHERE username = ? AND succeeded = 0 AND attempted_at > ?
        AND id > coalesce((SELECT max(id) FROM login_attempts WHERE username = ? AND succeeded = 1), 0)`)
      .get(name, since, name) as FailureWindow
  }

  /** Failures from a client address since `since`, whoever succeeded in between. */
  ipFailures (ip: string, since: number): FailureWindow {
    return this.#db.prepare('SELECT count(*) AS count, max(attempted_at) AS latest FROM login_attempts WHERE ip = ? AND succeeded = 0 AND attempted_at > ?')
      .get(ip, since) as FailureWindow
  }

  /** Deletes attempts older than `before` (they no longer count toward any lockout). */
  purge (before: number): number {
    return this.#db.prepare('DELETE FROM login_attempts WHERE attempted_at < ?').run(before).changes
  }
}
