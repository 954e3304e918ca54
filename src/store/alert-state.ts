import type { Db } from './db.ts'

/** How bad an alert is. */
export type AlertSeverity = 'warning' | 'critical'

/** One alert instance as stored (`alert_state`). */
export interface AlertRecord {
  /** The instance: the alert's name, and for per-server alerts `:` and the server. */
  key: string
  /** The alert's name (`circuit_open`, `sync_queue`…). */
  alert: string
  state: 'firing' | 'resolved'
  severity: AlertSeverity
  summary: string
  /** When it started firing, or when it resolved (ms). */
  since: number
  /** When a notification about it was last sent (ms), or null. */
  lastSentAt: number | null
  updatedAt: number
}

/** A firing or a resolution, for the digest (`alert_events`). */
export interface AlertEvent {
  at: number
  key: string
  alert: string
  state: 'firing' | 'resolved'
  severity: AlertSeverity
  summary: string
}

interface Row {
  key: string
  alert: string
  state: 'firing' | 'resolved'
  severity: AlertSeverity
  summary: string
  since: number
  last_sent_at: number | null
  updated_at: number
}

const fromRow = (r: Row): AlertRecord => ({ key: r.key, alert: r.alert, state: r.state, severity: r.severity, summary: r.summary, since: r.since, lastSentAt: r.last_sent_at, updatedAt: r.updated_at })

/**
 * The `alert_state` and `alert_events` tables: what the alert engine has told people, kept so
 * that a restart neither sends a firing alert again before its repeat interval nor forgets to
 * send its resolution.
 */
export class AlertStateRepository {
  readonly #db: Db

  constructor (db: Db) {
    this.#db = db
  }

  /** Every instance, firing ones first, then by key. */
  all (): AlertRecord[] {
    return (this.#db.prepare("SELECT * FROM alert_state ORDER BY state = 'resolved', key").all() as Row[]).map(fromRow)
  }

  /** One instance, or null. */
  get (key: string): AlertRecord | null {
    const row = this.#db.prepare('SELECT * FROM alert_state WHERE key = ?').get(key) as Row | undefined
    return row === undefined ? null : fromRow(row)
  }

  /** Writes an instance; when `event` is given, records it too, in the same transaction. */
  put (record: AlertRecord, event?: AlertEvent): void {
    this.#db.transaction(() => {
      this.#db.prepare(`INSERT INTO alert_state (key, alert, state, severity, summary, since, last_sent_at, updated_at) VALUES (@key, @alert, @state, @severity, @summary, @since, @lastSentAt, @updatedAt)
        ON CONFLICT (key) DO UPDATE SET alert = excluded.alert, state = excluded.state, severity = excluded.severity, summary = excluded.summary,
          since = excluded.since, last_sent_at = excluded.last_sent_at, updated_at = excluded.updated_at`).run(record)
      if (event !== undefined) {
        this.#db.prepare('INSERT INTO alert_events (at, key, alert, state, severity, summary) VALUES (@at, @key, @alert, @state, @severity, @summary)').run(event)
      }
    })()
  }

  /** Firings and resolutions since `since`, oldest first. */
  eventsSince (since: number): AlertEvent[] {
    return this.#db.prepare('SELECT at, key, alert, state, severity, summary FROM alert_events WHERE at >= ? ORDER BY id').all(since) as AlertEvent[]
  }

  /** Deletes events and resolved instances older than `before`; returns how many rows went. */
  purge (before: number): number {
    const events = this.#db.prepare('DELETE FROM alert_events WHERE at < ?').run(before).changes
    return events + this.#db.prepare("DELETE FROM alert_state WHERE state = 'resolved' AND updated_at < ?").run(before).changes
  }
}
