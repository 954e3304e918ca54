import type { Db } from './db.ts'

/** What happened (DESIGN §3: who, when, what, auth mode). */
export type AuditAction = 'login' | 'logout' | 'password_change' | 'lockout' | 'session_invalidated' | 'backchannel_logout' | 'user_added' | 'user_disabled' | 'user_enabled' | 'password_reset_requested' | 'password_reset'
  | 'service_token_created' | 'service_token_rotated' | 'service_token_revoked' | 'service_token_first_use' | 'service_token_lockout'

/** One audit entry. Never holds a secret: no password, token or cookie goes in `detail`. */
export interface AuditEntry {
  actor: string | null
  action: AuditAction
  result: 'success' | 'failure'
  authMode?: string | null
  reason?: string | null
  ip?: string | null
  detail?: Record<string, unknown>
}

/** An audit entry as stored. */
export interface AuditRecord extends Required<Omit<AuditEntry, 'detail'>> {
  id: number
  at: number
  detail: Record<string, unknown>
}

/** The `audit_log` table: append-only. */
export class AuditLogRepository {
  readonly #db: Db

  constructor (db: Db) {
    this.#db = db
  }

  /** Appends an entry. */
  append (entry: AuditEntry, now: number): void {
    this.#db.prepare('INSERT INTO audit_log (at, actor, action, result, auth_mode, reason, ip, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(now, entry.actor, entry.action, entry.result, entry.authMode ?? null, entry.reason ?? null, entry.ip ?? null, JSON.stringify(entry.detail ?? {}))
  }

  /** Entries since `since`, oldest first, optionally of one action. */
  since (since: number, action?: AuditAction): AuditRecord[] {
    const rows = (action === undefined
      ? this.#db.prepare('SELECT * FROM audit_log WHERE at >= ? ORDER BY id').all(since)
      : this.#db.prepare('SELECT * FROM audit_log WHERE at >= ? AND action = ? ORDER BY id').all(since, action)) as Array<Record<string, unknown>>
    return rows.map((r) => ({
      id: r.id as number,
      at: r.at as number,
      actor: r.actor as string | null,
      action: r.action as AuditAction,
      result: r.result as 'success' | 'failure',
      authMode: r.auth_mode as string | null,
      reason: r.reason as string | null,
      ip: r.ip as string | null,
      detail: JSON.parse(r.detail as string) as Record<string, unknown>
    }))
  }

  /** Successful and failed logins since `since`, by mode. */
  loginCounts (since: number): Array<{ mode: string, result: string, count: number }> {
    return this.#db.prepare("SELECT coalesce(auth_mode, 'none') AS mode, result, count(*) AS count FROM audit_log WHERE action = 'login' AND at >= ? GROUP BY mode, result ORDER BY mode, result")
      .all(since) as Array<{ mode: string, result: string, count: number }>
  }

  /** Successful logins since `since`, by minute (ms since the epoch, floored) and mode. */
  loginsByMinute (since: number): Array<{ minute: number, mode: string, count: number }> {
    return this.#db.prepare("SELECT (at / 60000) * 60000 AS minute, coalesce(auth_mode, 'none') AS mode, count(*) AS count FROM audit_log WHERE action = 'login' AND result = 'success' AND at >= ? GROUP BY minute, mode ORDER BY minute")
      .all(since) as Array<{ minute: number, mode: string, count: number }>
  }
}
