import type { Db } from './db.ts'

/** Where a login attempt came in: Gatehouse's form, or a password grant it made for it. */
export type LoginChannel = 'form' | 'password_grant'

/** Recent failures of one user or one client address. */
export interface FailureWindow {
  count: number
  /** Time of the latest failure (ms), or null. */
  latest: number | null
}

/** The `login_attempts` table: failures counted per user and per client address for lockout. */
export class LoginAttemptsRepository {
  readonly #db: Db

  constructor (db: Db) {
    this.#db = db
  }

  /** Records one attempt. */
  record (attempt: { username: string | null, ip: string | null, channel: LoginChannel, succeeded: boolean }, now: number): void {
    this.#db.prepare('INSERT INTO login_attempts (username, ip, channel, succeeded, attempted_at) VALUES (?, ?, ?, ?, ?)')
      .run(attempt.username?.toLowerCase() ?? null, attempt.ip, attempt.channel, attempt.succeeded ? 1 : 0, now)
  }

  /** Failures of a user (case-insensitive) since `since`. */
  userFailures (username: string, since: number): FailureWindow {
    return this.#db.prepare('SELECT count(*) AS count, max(attempted_at) AS latest FROM login_attempts WHERE username = ? AND succeeded = 0 AND attempted_at > ?')
      .get(username.toLowerCase(), since) as FailureWindow
  }

  /** Failures from a client address since `since`. */
  ipFailures (ip: string, since: number): FailureWindow {
    return this.#db.prepare('SELECT count(*) AS count, max(attempted_at) AS latest FROM login_attempts WHERE ip = ? AND succeeded = 0 AND attempted_at > ?')
      .get(ip, since) as FailureWindow
  }

  /** A successful login clears the user's failures (not the address's: others may share it). */
  clearUser (username: string): void {
    this.#db.prepare('DELETE FROM login_attempts WHERE username = ? AND succeeded = 0').run(username.toLowerCase())
  }

  /** Deletes attempts older than `before` (they no longer count toward any lockout). */
  purge (before: number): number {
    return this.#db.prepare('DELETE FROM login_attempts WHERE attempted_at < ?').run(before).changes
  }
}
