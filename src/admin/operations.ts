import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { ModeTracker } from '../breaker/mode.ts'
import type { KeycloakPool } from '../keycloak/failover.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { Mailer } from '../notify/mailer.ts'
import { AlertEngine, configuredChannels } from '../alerts/engine.ts'
import { ALERT_NAMES, type AlertInputs } from '../alerts/conditions.ts'
import { formatTime, type AlertNotification, type DigestMessage, type Sender } from '../alerts/messages.ts'
import { AlertStateRepository, type AlertSeverity } from '../store/alert-state.ts'
import type { AuditLogRepository } from '../store/audit-log.ts'
import type { Db } from '../store/db.ts'
import { MetaRepository } from '../store/meta.ts'
import type { SyncQueueRepository } from '../store/sync-queue.ts'
import { VERSION } from '../version.ts'
import { History, type ServerHealth } from './history.ts'
import type { StatusReport } from './status.ts'
import type { ServiceTokenAlert } from '../service-token/service.ts'

const MINUTE = 60_000
const HOUR = 60 * MINUTE
/** The window token refresh failures are judged over (as the Prometheus rule's `[15m]`). */
export const REFRESH_WINDOW_MS = 15 * MINUTE
/** Token refresh results that are not failures: the refresh worked, or there was nothing to refresh. */
const REFRESH_NOT_FAILED = new Set(['success', 'no_refresh_token'])

/** What `/status` adds from here: the last hour, the alerts, and since when the mode holds. */
export interface OperationsReport {
  /** When the mode in force began (this process's start if it has not changed since). */
  mode_since: string
  alerts: {
    enabled: boolean
    channels: string[]
    firing: Array<{ key: string, alert: string, severity: AlertSeverity, summary: string, since: string, last_sent_at: string | null }>
  }
  last_hour: {
    /** Start of the first of the 60 one-minute entries in each series (ISO). */
    from: string
    decisions: Record<string, number>
    decisions_per_minute: Record<string, number[]>
    logins: Record<string, number>
    login_failures: number
    logins_per_minute: Record<string, number[]>
    circuits: Array<{ server: string, minutes: Array<ServerHealth | null> }>
  }
}

/** What {@link Operations} reads. */
export interface OperationsDeps {
  config: Config
  db: Db
  clock: Clock
  log: Logger
  metrics: Metrics
  pool: KeycloakPool
  mode: ModeTracker
  queue: SyncQueueRepository
  audit: AuditLogRepository
  mailer: Mailer | null
  /**
   * Whether this process evaluates and sends the alerts and the digest: false in cluster
   * workers but the first, so that one host sends each notification once. Default is true.
   */
  alerting?: boolean
  /** The status report, for the digest. */
  status: () => StatusReport | Promise<StatusReport>
  /** Service tokens (issue 16), for their two alerts; absent when service tokens are off. */
  serviceTokens?: {
    /** Every token's name, whatever its state. */
    names: () => string[]
    serviceTokenAlerts: (now: number) => ServiceTokenAlert[]
  }
}

/** How often the history samples counters and the alert timer looks for work, in milliseconds. */
export const TICK_MS = 10_000

const DECISIONS = ['allow', 'deny', 'redirect'] as const
const LOGIN_MODES = ['keycloak', 'cached', 'local'] as const

/**
 * The serve process's operator side: the last hour in memory ({@link History}: circuits,
 * decisions, refreshes), the alerts evaluated on `alerts.evaluation_interval_seconds` and the
 * daily digest. Time comes from the injected clock; tests call {@link sample},
 * {@link evaluate} and {@link tick} themselves instead of waiting for the timer.
 */
export class Operations {
  readonly history: History
  /** The alert engine, or null when `alerts.enabled` is false. */
  readonly alerts: AlertEngine | null
  readonly #d: OperationsDeps
  readonly #sender: Sender
  #modeSince: number
  #lastEvaluation = Number.NEGATIVE_INFINITY
  #timer: NodeJS.Timeout | null = null
  #ticking: Promise<void> | null = null

  constructor (deps: OperationsDeps) {
    this.#d = deps
    const { config, clock } = deps
    this.history = new History({ clock })
    this.#modeSince = clock.now()
    deps.mode.onChange(() => { this.#modeSince = clock.now() })
    deps.pool.onChange(() => { this.history.observeCircuits(deps.pool.status()) })
    const admin = config.admin
    const host = admin.host === '0.0.0.0' || admin.host === '::' ? hostname() : admin.host.includes(':') ? `[${admin.host}]` : admin.host
    this.#sender = {
      instance: hostname(),
      environment: config.environment,
      version: VERSION,
      dashboard: admin.port === 0 ? null : `http://${host}:${admin.port}/status.html`,
      timezone: config.alerts.timezone
    }
    this.alerts = config.alerts.enabled && deps.alerting !== false
      ? new AlertEngine({
        alerts: config.alerts,
        repository: new AlertStateRepository(deps.db),
        meta: new MetaRepository(deps.db),
        channels: configuredChannels(config.alerts, deps.mailer),
        sender: this.#sender,
        clock,
        log: deps.log.child({ module: 'alerts' }),
        metrics: { notifications: deps.metrics.alertNotifications }
      })
      : null
  }

  /** Who sends notifications (instance, environment, dashboard URL). */
  get sender (): Sender {
    return this.#sender
  }

  /** Records the circuits and the counters the history keeps, now. */
  async sample (): Promise<void> {
    const { metrics, pool } = this.#d
    this.history.observeCircuits(pool.status())
    const values = new Map<string, number>()
    for (const v of (await metrics.decisionsTotal.get()).values) {
      const key = `decision:${String(v.labels.decision)}`
      values.set(key, (values.get(key) ?? 0) + v.value)
    }
    let attempts = 0
    let failures = 0
    for (const v of (await metrics.tokenRefresh.get()).values) {
      const result = String(v.labels.result)
      if (result === 'no_refresh_token') continue
      attempts += v.value
      if (!REFRESH_NOT_FAILED.has(result)) failures += v.value
    }
    values.set('refresh:attempts', attempts)
    values.set('refresh:failures', failures)
    this.history.recordCounters(values)
  }

  /** What the alert conditions read now. */
  alertInputs (): AlertInputs {
    const { config, pool, queue, clock } = this.#d
    const now = clock.now()
    const keycloakSync = config.keycloak.kind === 'keycloak'
    const depth = keycloakSync ? queue.depth(now) : null
    return {
      now,
      circuits: pool.enabled
        ? pool.status().map((s) => ({ server: s.server, state: s.state, consecutiveFailures: s.consecutiveFailures, lastSuccessAt: s.lastSuccessAt, lastErrorKind: s.lastErrorKind, lastError: s.lastError, unhealthySince: this.history.unhealthySince(s.server) }))
        : [],
      syncUnfinished: depth === null ? null : depth.byStatus.pending + depth.byStatus.processing + depth.byStatus.failed,
      syncOldestSeconds: depth?.oldestPendingSeconds ?? null,
      syncFailedLastHour: keycloakSync ? queue.failedSince(now - HOUR) : null,
      refresh: { attempts: this.history.increase('refresh:attempts', REFRESH_WINDOW_MS), failures: this.history.increase('refresh:failures', REFRESH_WINDOW_MS) },
      refreshWindowCovered: this.history.coveredMs >= REFRESH_WINDOW_MS,
      serviceTokens: this.#d.serviceTokens === undefined ? null : { names: this.#d.serviceTokens.names(), alerts: this.#d.serviceTokens.serviceTokenAlerts(now) }
    }
  }

  /** Samples, evaluates the alerts and sends what is due; resolves to what was sent. */
  async evaluate (): Promise<AlertNotification[]> {
    if (this.alerts === null) return []
    await this.sample()
    this.#lastEvaluation = this.#d.clock.now()
    return await this.alerts.evaluate(this.alertInputs())
  }

  /** Sends the daily digest if one is due; resolves to it, or null. */
  async digest (): Promise<DigestMessage | null> {
    return this.alerts === null ? null : await this.alerts.digestIfDue((forMs) => this.buildDigest(forMs))
  }

  /** One timer tick: a sample; the alerts when their interval has passed; the digest when due. */
  tick (): Promise<void> {
    this.#ticking ??= (async () => {
      try {
        const due = this.#d.clock.now() - this.#lastEvaluation >= this.#d.config.alerts.evaluation_interval_seconds * 1000
        if (this.alerts !== null && due) await this.evaluate()
        else await this.sample()
        await this.digest()
      } catch (err) {
        this.#d.log.error({ err }, 'operations tick failed')
      }
    })().finally(() => { this.#ticking = null })
    return this.#ticking
  }

  /** Starts the timer (every {@link TICK_MS}); it never holds the process open. */
  start (): void {
    this.#timer = setInterval(() => { void this.tick() }, TICK_MS)
    this.#timer.unref()
  }

  /** Stops the timer and waits for a tick in progress. */
  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.#ticking
  }

  /** Firing alert instances by alert name, for `gatehouse_alerts_firing`. */
  firingByAlert (): Record<string, number> {
    const counts: Record<string, number> = Object.fromEntries(ALERT_NAMES.map((a) => [a, 0]))
    if (this.alerts === null) return counts
    for (const r of this.alerts.state()) if (r.state === 'firing') counts[r.alert] = (counts[r.alert] ?? 0) + 1
    return counts
  }

  /** What `/status` adds (see {@link OperationsReport}). */
  report (): OperationsReport {
    const { clock, pool, audit } = this.#d
    const now = clock.now()
    const starts = this.history.minuteStarts()
    const from = starts[0] as number
    const decisions_per_minute = Object.fromEntries(DECISIONS.map((d) => [d, this.history.counterSeries(`decision:${d}`)]))
    const logins_per_minute: Record<string, number[]> = Object.fromEntries(LOGIN_MODES.map((m) => [m, starts.map(() => 0)]))
    for (const row of audit.loginsByMinute(from)) {
      const series = logins_per_minute[row.mode] ??= starts.map(() => 0)
      const index = Math.floor((row.minute - from) / MINUTE)
      if (index >= 0 && index < series.length) series[index] = (series[index] as number) + row.count
    }
    const logins: Record<string, number> = Object.fromEntries(LOGIN_MODES.map((m) => [m, 0]))
    let loginFailures = 0
    for (const row of audit.loginCounts(now - HOUR)) {
      if (row.result === 'success') logins[row.mode] = (logins[row.mode] ?? 0) + row.count
      else loginFailures += row.count
    }
    return {
      mode_since: new Date(this.#modeSince).toISOString(),
      alerts: {
        enabled: this.alerts !== null,
        channels: [...(this.alerts?.channels ?? [])],
        firing: (this.alerts?.state() ?? []).filter((r) => r.state === 'firing').map((r) => ({
          key: r.key, alert: r.alert, severity: r.severity, summary: r.summary, since: new Date(r.since).toISOString(), last_sent_at: r.lastSentAt === null ? null : new Date(r.lastSentAt).toISOString()
        }))
      },
      last_hour: {
        from: new Date(from).toISOString(),
        decisions: Object.fromEntries(DECISIONS.map((d) => [d, this.history.increase(`decision:${d}`, HOUR)])),
        decisions_per_minute,
        logins,
        login_failures: loginFailures,
        logins_per_minute,
        circuits: pool.status().map((s) => ({ server: s.server, minutes: this.history.circuitTimeline(s.server) }))
      }
    }
  }

  /** The daily digest for the day ending at `forMs`: the last 24 hours, and the state now. */
  async buildDigest (forMs: number): Promise<DigestMessage> {
    const { queue, audit, clock } = this.#d
    const now = clock.now()
    const since = now - 24 * HOUR
    const status = await this.#d.status()
    const events = this.alerts === null ? [] : new AlertStateRepository(this.#d.db).eventsSince(since)
    const firing = (this.alerts?.state() ?? []).filter((r) => r.state === 'firing')
    const logins = audit.loginCounts(since)
    const ok = logins.filter((l) => l.result === 'success').reduce((n, l) => n + l.count, 0)
    const failed = logins.filter((l) => l.result !== 'success').reduce((n, l) => n + l.count, 0)
    const zone = this.#d.config.alerts.timezone
    const sections: DigestMessage['sections'] = [
      {
        title: 'Now',
        lines: [
          `mode: ${status.mode} (since ${formatTime(this.#modeSince, zone)})`,
          ...status.keycloak.servers.map((s) => `keycloak ${s.server}: circuit ${s.state}${s.last_error_kind !== null ? `, last error ${s.last_error_kind}` : ''}`),
          `signing keys: ${status.jwks.keys}, fetched ${status.jwks.fetched_at ?? 'never'}`,
          `sessions: ${Object.entries(status.sessions.active).map(([m, n]) => `${n} ${m}`).join(', ')}`
        ]
      },
      {
        title: 'Alerts',
        lines: [
          firing.length === 0 ? 'none firing now' : `${firing.length} firing now: ${firing.map((f) => f.summary).join('; ')}`,
          `${events.filter((e) => e.state === 'firing').length} fired and ${events.filter((e) => e.state === 'resolved').length} resolved in the last 24 hours`,
          ...events.map((e) => `${formatTime(e.at, zone)} ${e.state === 'firing' ? `FIRING ${e.severity}` : 'RESOLVED'}: ${e.summary}`)
        ]
      },
      {
        title: 'Logins (24 hours)',
        lines: [`${ok} succeeded, ${failed} failed`, ...logins.map((l) => `${l.mode} ${l.result}: ${l.count}`)]
      },
      {
        title: 'Sync queue',
        lines: [
          `${status.sync.pending} pending, ${status.sync.failed} failed, ${status.sync.dead} dead; oldest ${status.sync.oldest_pending_seconds === null ? 'none' : `${status.sync.oldest_pending_seconds} s`}`,
          `${queue.failedSince(since)} items failed in the last 24 hours`
        ]
      }
    ]
    return { for: forMs, summary: `mode ${status.mode}, ${firing.length} alert${firing.length === 1 ? '' : 's'} firing, ${ok} logins`, sections }
  }
}
