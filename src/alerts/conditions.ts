import type { Config } from '../config/schema.ts'
import type { CircuitState } from '../breaker/circuit-breaker.ts'
import type { ServiceTokenAlert } from '../service-token/service.ts'
import type { AlertSeverity } from '../store/alert-state.ts'

/** The alerts Gatehouse raises itself (and, as Prometheus rules, deploy/prometheus/alerts.yaml). */
export const ALERT_NAMES = ['circuit_open', 'sync_queue', 'sync_failures', 'token_refresh_failures', 'service_token_expiring', 'service_token_grace'] as const
export type AlertName = typeof ALERT_NAMES[number]

/**
 * What one evaluation found for one alert instance:
 * - `firing`: its condition holds (it starts firing, or goes on);
 * - `clear`: its condition is known not to hold (a firing one resolves);
 * - `hold`: not known either way yet (a server not heard from since a restart, too few
 *   refreshes to judge): nothing starts, and nothing firing resolves.
 */
export interface AlertObservation {
  key: string
  alert: AlertName
  status: 'firing' | 'clear' | 'hold'
  severity: AlertSeverity
  /** One line for a subject or a chat message. */
  summary: string
  /** Facts, in order, for the message body. */
  facts: Array<[string, string]>
  /** What the person paged should look at first. */
  hint: string
}

/** One Keycloak server as the conditions read it. */
export interface CircuitInput {
  server: string
  state: CircuitState
  consecutiveFailures: number
  lastSuccessAt: number | null
  lastErrorKind: string | null
  lastError: string | null
  /** Since when its circuit has not been closed, or null. */
  unhealthySince: number | null
}

/** Everything one evaluation reads. */
export interface AlertInputs {
  now: number
  /** Each server, or none when Keycloak is off (`feature_flags.keycloak_enabled`). */
  circuits: CircuitInput[]
  /** Unfinished sync items (pending, processing, failed), or null without a sync queue (generic provider). */
  syncUnfinished: number | null
  /** The oldest unfinished item's age in seconds, or null. */
  syncOldestSeconds: number | null
  /** Sync items that failed or died in the last hour. */
  syncFailedLastHour: number | null
  /** Session token refreshes over the last 15 minutes, and how many failed. */
  refresh: { attempts: number, failures: number }
  /** Whether the refresh counts cover the whole 15 minutes (false just after a start). */
  refreshWindowCovered: boolean
  /**
   * Service tokens (issue 16): the name of every token known (each gets an observation, so a
   * rotated or revoked one resolves), and what `ServiceTokenService.serviceTokenAlerts` found;
   * null when service tokens are off.
   */
  serviceTokens: { names: readonly string[], alerts: readonly ServiceTokenAlert[] } | null
}

const minutes = (ms: number): string => `${Math.max(0, Math.floor(ms / 60_000))} min`
// A duration for people: days above two days, else hours, else minutes.
const left = (seconds: number): string => seconds >= 2 * 86_400 ? `${Math.floor(seconds / 86_400)} days` : seconds >= 2 * 3600 ? `${Math.floor(seconds / 3600)} h` : minutes(seconds * 1000)

/**
 * Evaluates every condition of `alerts` (the thresholds) over `inputs`. Pure: the engine
 * decides what to send from what this returns and from what it sent before.
 */
export function evaluateConditions (inputs: AlertInputs, thresholds: Config['alerts']): AlertObservation[] {
  const out: AlertObservation[] = []
  const reachable = inputs.circuits.filter((c) => c.state === 'closed' && c.consecutiveFailures === 0 && c.lastSuccessAt !== null).length
  for (const c of inputs.circuits) {
    const openFor = c.unhealthySince === null ? null : inputs.now - c.unhealthySince
    // A circuit is cleared only by a call that succeeded; a closed one that has not been heard
    // from since a restart, or is counting failures, proves nothing either way.
    const healthy = c.state === 'closed' && c.consecutiveFailures === 0 && c.lastSuccessAt !== null
    const status = healthy ? 'clear' : openFor !== null && openFor >= thresholds.circuit_open_minutes_threshold * 60_000 ? 'firing' : 'hold'
    out.push({
      key: `circuit_open:${c.server}`,
      alert: 'circuit_open',
      status,
      // Critical when no server answers: Gatehouse is degraded or offline.
      severity: reachable === 0 ? 'critical' : 'warning',
      summary: healthy
        ? `Keycloak server ${c.server} answers again`
        : `Keycloak circuit ${c.state === 'closed' ? 'failing' : 'open'} for ${openFor === null ? 'an unknown time' : minutes(openFor)}: ${c.server}`,
      facts: [
        ['server', c.server],
        ['circuit', c.state],
        ['consecutive failures', String(c.consecutiveFailures)],
        ['last error', c.lastErrorKind === null ? 'none' : `${c.lastErrorKind}${c.lastError !== null ? ` (${c.lastError})` : ''}`],
        ['servers answering', `${reachable} of ${inputs.circuits.length}`]
      ],
      hint: reachable === 0
        ? 'No Keycloak server answers: sessions run on cached tokens (mode degraded) until the grace period ends. Check Keycloak itself and the network path from this host (gatehouse doctor diagnose).'
        : 'Other servers still answer, so users are not affected yet. Check this server (gatehouse doctor diagnose names its error).'
    })
  }

  if (inputs.syncUnfinished !== null) {
    const n = inputs.syncUnfinished
    const critical = n > thresholds.sync_queue_critical_threshold
    const warning = n > thresholds.sync_queue_warning_threshold
    out.push({
      key: 'sync_queue',
      alert: 'sync_queue',
      status: warning ? 'firing' : 'clear',
      severity: critical ? 'critical' : 'warning',
      summary: warning ? `Sync queue holds ${n} unfinished items (threshold ${critical ? thresholds.sync_queue_critical_threshold : thresholds.sync_queue_warning_threshold})` : `Sync queue back to ${n} unfinished items`,
      facts: [
        ['unfinished items', String(n)],
        ['oldest', inputs.syncOldestSeconds === null ? 'none' : `${inputs.syncOldestSeconds} s`],
        ['warning above', String(thresholds.sync_queue_warning_threshold)],
        ['critical above', String(thresholds.sync_queue_critical_threshold)]
      ],
      hint: 'Identity writes (password changes, logouts) wait for Keycloak. Is Keycloak reachable, and is a sync worker running? gatehouse sync status shows the queue and its last error.'
    })
  }

  if (inputs.syncFailedLastHour !== null) {
    const n = inputs.syncFailedLastHour
    out.push({
      key: 'sync_failures',
      alert: 'sync_failures',
      status: n > thresholds.failed_sync_threshold ? 'firing' : 'clear',
      severity: 'warning',
      summary: n > thresholds.failed_sync_threshold ? `${n} sync items failed in the last hour (threshold ${thresholds.failed_sync_threshold})` : `Sync failures back to ${n} in the last hour`,
      facts: [['failed in the last hour', String(n)], ['threshold', String(thresholds.failed_sync_threshold)]],
      hint: 'Keycloak refuses replayed writes (a policy, a missing user, the service account\'s roles). gatehouse sync status shows the last error; gatehouse sync retry ID replays one after the fix.'
    })
  }

  const { attempts, failures } = inputs.refresh
  const rate = attempts === 0 ? 0 : failures / attempts
  const judged = attempts >= thresholds.token_refresh_min_attempts
  out.push({
    key: 'token_refresh_failures',
    alert: 'token_refresh_failures',
    status: judged ? (rate > thresholds.token_refresh_failure_rate_threshold ? 'firing' : 'clear') : inputs.refreshWindowCovered ? 'clear' : 'hold',
    severity: 'warning',
    summary: judged && rate > thresholds.token_refresh_failure_rate_threshold
      ? `${Math.round(rate * 100)}% of token refreshes failed in the last 15 minutes (${failures} of ${attempts})`
      : `Token refresh failures back to ${Math.round(rate * 100)}% (${failures} of ${attempts})`,
    facts: [
      ['failed refreshes (15 min)', `${failures} of ${attempts}`],
      ['threshold', `${Math.round(thresholds.token_refresh_failure_rate_threshold * 100)}%`]
    ],
    hint: 'Sessions cannot renew their Keycloak tokens: Keycloak unreachable, a rotated client secret, or a clock skew. gatehouse doctor diagnose checks each.'
  })

  if (inputs.serviceTokens !== null) out.push(...serviceTokenObservations(inputs.serviceTokens))
  return out
}

// One instance of each service-token alert per token name: firing while the service says so,
// clear otherwise (rotated, revoked, or its previous token no longer used), so each resolves once.
function serviceTokenObservations (tokens: NonNullable<AlertInputs['serviceTokens']>): AlertObservation[] {
  const out: AlertObservation[] = []
  const expiring = new Map<string, Extract<ServiceTokenAlert, { kind: 'expiring' }>>()
  const grace = new Map<string, Extract<ServiceTokenAlert, { kind: 'previous_in_use' }>>()
  for (const a of tokens.alerts) {
    if (a.kind === 'expiring') expiring.set(a.name, a)
    else grace.set(a.name, a)
  }
  for (const name of tokens.names) {
    const e = expiring.get(name)
    out.push({
      key: `service_token_expiring:${name}`,
      alert: 'service_token_expiring',
      status: e === undefined ? 'clear' : 'firing',
      severity: 'warning',
      summary: e === undefined ? `Service token ${name} no longer expires soon` : `Service token ${name} expires in ${left(e.seconds_left)}`,
      facts: e === undefined
        ? [['token', name]]
        : [['token', name], ['expires', e.expires_at], ['automatic rotation', e.auto_rotate_days === null ? 'off' : `${e.auto_rotate_days} days before expiry (overdue)`]],
      hint: e?.auto_rotate_days != null
        ? 'Its automatic rotation is overdue: look for "automatic rotation" in the log (a failed delivery is taken back), then gatehouse tokens rotate NAME by hand.'
        : 'Rotate it (gatehouse tokens rotate NAME --grace-days N), hand the new token to its owner, and let the previous one run out.'
    })
    const g = grace.get(name)
    out.push({
      key: `service_token_grace:${name}`,
      alert: 'service_token_grace',
      status: g === undefined ? 'clear' : 'firing',
      severity: 'warning',
      summary: g === undefined ? `The previous token of ${name} is no longer in use near the end of its grace period` : `The previous token of ${name} is still in use; its grace period ends in ${left(g.seconds_left)}`,
      facts: g === undefined
        ? [['token', name]]
        : [['token', name], ['grace period ends', g.previous_valid_until], ['previous token last used', g.previous_last_used_at]],
      hint: 'A client still sends the token from before the last rotation and will get 401 when the grace period ends. Find it (the access log shows service:NAME), give it the new token, or extend with another rotation.'
    })
  }
  return out
}
