import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { VERSION } from '../version.ts'
import { FastHistogram } from './fast-histogram.ts'

/**
 * Every `gatehouse_*` metric, on a registry of its own per app instance (never prom-client's
 * global one: tests build many apps in one process).
 */
export interface Metrics {
  registry: Registry
  /** Requests by decision (allow, deny, redirect, none), how the caller was authenticated, and status class (1xx…5xx). */
  requestsTotal: Counter<'decision' | 'auth_mode' | 'code'>
  /** Proxied requests the app could not answer, by kind (refused, timeout, reset, network, bad_response, other). */
  upstreamErrors: Counter<'kind'>
  /** Always 1; the `version` label is Gatehouse's version. */
  buildInfo: Gauge<'version'>
  /** Log lines dropped because standard output was not read fast enough, or failed. */
  logLinesDropped: Counter
  /** Whole request time on the proxy listener, upstream included. */
  requestDuration: FastHistogram
  /** Decisions by entry point (proxy, forward_auth, ext_authz_http, ext_authz_grpc) and kind (allow, deny, redirect). */
  decisionsTotal: Counter<'entrypoint' | 'decision'>
  /** Time `decide()` took, by entry point (the Keycloak-free part of a request's cost). */
  decisionDuration: FastHistogram
  /** Bearer-token checks by result (valid, cached, expired, invalid_signature…). */
  tokenVerifications: Counter<'result'>
  /** JWKS refresh attempts by result (success, failure). */
  jwksRefresh: Counter<'result'>
  /** Age of the JWKS in use; -1 when there is none. */
  jwksAge: Gauge
  /** Keycloak call latency by server, operation and result. */
  keycloakRequestDuration: Histogram<'server' | 'operation' | 'result'>
  /** One per mode; 1 for the mode in force. */
  mode: Gauge<'mode'>
  /** Each server's circuit: 0 closed, 1 half-open, 2 open. */
  circuitState: Gauge<'server'>
  /** Circuit state changes by server and the state entered. */
  circuitTransitions: Counter<'server' | 'to'>
  /** Session token refreshes by result (success, invalid_grant, unavailable…). */
  tokenRefresh: Counter<'result'>
  /** Session token sets still usable (fresh, or inside the grace period). */
  cachedTokens: Gauge
  /** Live sessions by mode. */
  sessionsActive: Gauge<'mode'>
  /** The session store in use and its mode: 1 for the mode in force, 0 for the other. */
  storeMode: Gauge<'store' | 'mode'>
  /** Logins by mode and result (success, bad_credentials, locked…). */
  loginsTotal: Counter<'mode' | 'result'>
  /** Sync queue items by status. */
  syncQueueDepth: Gauge<'status'>
  /** Age of the oldest unfinished sync item; 0 when none. */
  syncOldestPending: Gauge
  /** Replayed sync items by operation and result (done, failed, dead, released). */
  syncOperations: Counter<'operation' | 'result'>
  /** Time to replay one sync item. */
  syncReplayDuration: Histogram
  /** Service tokens by state (active, expiring, expired, revoked) and live previous tokens (in_grace). */
  serviceTokens: Gauge<'state'>
  /** When each service token not revoked expires, in seconds since the epoch. */
  serviceTokenExpiry: Gauge<'name'>
  /** When the grace period of each live previous token ends, in seconds since the epoch. */
  serviceTokenGraceEnd: Gauge<'name'>
  /** When each live previous token was last used through this process's file, in seconds since the epoch. */
  serviceTokenPreviousLastUsed: Gauge<'name'>
  /** Policy reloads (file watch, SIGHUP) by result: success, failure (rejected; the running set stays), unchanged. */
  policyReloads: Counter<'result'>
  /** Alert and digest notifications by channel (webhook, email) and result (sent, failed). */
  alertNotifications: Counter<'channel' | 'result'>
  /** Alert instances firing now, by alert name. */
  alertsFiring: Gauge<'alert'>
  /** Password reset requests and completions by result. */
  passwordResets: Counter<'result'>
}

/** The `result` values of `gatehouse_policy_reloads_total`. */
export const POLICY_RELOAD_RESULTS = ['success', 'failure', 'unchanged'] as const

/** Values of `gatehouse_circuit_state`. */
export const CIRCUIT_STATE_VALUES = { closed: 0, half_open: 1, open: 2 } as const

/** The `kind` values of `gatehouse_upstream_errors_total`: why a proxied request got no answer from the app. */
export const UPSTREAM_ERROR_KINDS = ['refused', 'timeout', 'reset', 'network', 'bad_response', 'other'] as const

/** One of {@link UPSTREAM_ERROR_KINDS}. */
export type UpstreamErrorKind = typeof UPSTREAM_ERROR_KINDS[number]

/** The `state` values of `gatehouse_service_tokens`. */
export const SERVICE_TOKEN_STATES = ['active', 'expiring', 'expired', 'revoked', 'in_grace'] as const
/** The modes `gatehouse_store_mode` reports: `degraded` while Redis is unreachable and SQLite carries sessions, or Redis refuses the store's commands. */
export const STORE_MODES = ['normal', 'degraded'] as const

/** The modes `gatehouse_mode` reports. */
export const MODES = ['normal', 'degraded', 'offline'] as const

/** The per-request metric updates, with label children cached (see {@link createMetrics}). */
export interface HotPathMetrics {
  /** One request decided and answered with `status`, `seconds` after it arrived. */
  recordRequest: (decision: string, authMode: string, status: number, seconds: number) => void
  /** One proxied request the app could not answer. */
  recordUpstreamError: (kind: UpstreamErrorKind) => void
  /** One bearer-token check. */
  recordVerification: (result: string) => void
  /** One decision, by entry point and kind, and the seconds it took. */
  recordDecision: (entrypoint: string, decision: string, seconds: number) => void
}

/** Sources the gauges read at scrape time. */
export interface GaugeSources {
  /** Seconds since the JWKS in use was fetched, or null when there is none. */
  jwksAgeSeconds: () => number | null
  /** The mode in force. */
  mode: () => typeof MODES[number]
  /** Each server's circuit state. */
  circuits: () => Array<{ server: string, state: keyof typeof CIRCUIT_STATE_VALUES }>
  /** Usable cached token sets (read from the session store, so possibly asynchronously). */
  cachedTokens: () => number | Promise<number>
  /** Live sessions by mode. */
  sessionsActive: () => Record<string, number> | Promise<Record<string, number>>
  /** The session store (`sqlite` or `redis`) and its mode. */
  storeMode: () => { store: string, mode: typeof STORE_MODES[number] }
  /** Sync queue items by status, and the oldest unfinished one's age. */
  syncQueue: () => { byStatus: Record<string, number>, oldestPendingSeconds: number | null }
  /** Log lines dropped since the process started (never decreases). */
  logLinesDropped: () => number
  /** Service tokens by state. */
  serviceTokens: () => Record<string, number>
  /** Each service token not revoked and its expiry (ms since the epoch). */
  serviceTokenExpiries: () => Array<{ name: string, expiresAt: number }>
  /** Each previous token still inside its grace period: when that ends, and its last use (ms), if any. */
  serviceTokenGraces: () => Array<{ name: string, validUntil: number, lastUsedAt: number | null }>
  /** Firing alert instances by alert name (every known alert, 0 when none fires). */
  alertsFiring: () => Record<string, number>
}

/** Values of the `code` label of `gatehouse_requests_total`, indexed by status / 100. */
const STATUS_CLASSES = ['1xx', '1xx', '2xx', '3xx', '4xx', '5xx'] as const

/** Builds the registry and every metric; gauges read `sources` lazily, at scrape time. */
export function createMetrics (sources: Partial<GaugeSources> = {}): Metrics & HotPathMetrics & { bind: (s: Partial<GaugeSources>) => void } {
  const registry = new Registry()
  const bound: Partial<GaugeSources> = { ...sources }
  collectDefaultMetrics({ register: registry, prefix: 'gatehouse_' })
  const registers = [registry]
  // prom-client validates and hashes the label object on every update, which cost more than
  // the rest of a cached token check (npm run bench): on the request path counts go into
  // plain maps, and each counter's `collect` (run before every read) moves them in. Requests
  // are counted in a map per decision, a map per mode, and an array per status class, kept
  // between scrapes: after the first request of a kind, counting one allocates nothing.
  const pendingRequests = new Map<string, Map<string, number[]>>()
  const pendingVerifications = new Map<string, number>()
  const pendingDecisions = new Map<string, Map<string, number>>()
  let logLinesReported = 0
  const metrics: Metrics = {
    registry,
    requestsTotal: new Counter({
      name: 'gatehouse_requests_total',
      help: 'Requests on the proxy listener, by decision, authentication mode and status class.',
      labelNames: ['decision', 'auth_mode', 'code'] as const,
      registers,
      collect () {
        for (const [decision, byMode] of pendingRequests) {
          for (const [mode, counts] of byMode) {
            for (let i = 1; i < counts.length; i++) {
              const n = counts[i] as number
              if (n === 0) continue
              this.inc({ decision, auth_mode: mode, code: STATUS_CLASSES[i] as string }, n)
              counts[i] = 0
            }
          }
        }
      }
    }),
    upstreamErrors: new Counter({
      name: 'gatehouse_upstream_errors_total',
      help: 'Proxied requests the app could not answer, by kind: refused, timeout, reset, network, bad_response, other.',
      labelNames: ['kind'] as const,
      registers
    }),
    buildInfo: new Gauge({
      name: 'gatehouse_build_info',
      help: 'Always 1; the version label is the running Gatehouse version.',
      labelNames: ['version'] as const,
      registers
    }),
    logLinesDropped: new Counter({
      name: 'gatehouse_log_lines_dropped_total',
      help: 'Log lines dropped because standard output was not read fast enough or failed.',
      registers,
      collect () {
        const total = bound.logLinesDropped?.() ?? 0
        if (total > logLinesReported) this.inc(total - logLinesReported)
        logLinesReported = total
      }
    }),
    requestDuration: new FastHistogram({
      name: 'gatehouse_request_duration_seconds',
      help: 'Time from request to response on the proxy listener, upstream included.',
      label: null,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers
    }),
    decisionsTotal: new Counter({
      name: 'gatehouse_decisions_total',
      help: 'Decisions, by entry point (proxy, forward_auth, ext_authz_http, ext_authz_grpc) and kind (allow, deny, redirect).',
      labelNames: ['entrypoint', 'decision'] as const,
      registers,
      collect () {
        for (const [entrypoint, byKind] of pendingDecisions) {
          for (const [decision, n] of byKind) {
            if (n === 0) continue
            this.inc({ entrypoint, decision }, n)
            byKind.set(decision, 0)
          }
        }
      }
    }),
    decisionDuration: new FastHistogram({
      name: 'gatehouse_decision_duration_seconds',
      help: 'Time taken to decide a request, by entry point (no upstream time; Keycloak only when a key or refresh was needed).',
      label: 'entrypoint',
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1, 1],
      registers
    }),
    tokenVerifications: new Counter({
      name: 'gatehouse_token_verifications_total',
      help: 'Bearer access-token verifications, by result.',
      labelNames: ['result'] as const,
      registers,
      collect () {
        for (const [result, n] of pendingVerifications) this.inc({ result }, n)
        pendingVerifications.clear()
      }
    }),
    jwksRefresh: new Counter({
      name: 'gatehouse_jwks_refresh_total',
      help: 'JWKS refresh attempts, by result.',
      labelNames: ['result'] as const,
      registers
    }),
    jwksAge: new Gauge({
      name: 'gatehouse_jwks_age_seconds',
      help: 'Seconds since the JWKS in use was fetched from Keycloak; -1 when there is none.',
      registers,
      collect () {
        this.set(bound.jwksAgeSeconds?.() ?? -1)
      }
    }),
    keycloakRequestDuration: new Histogram({
      name: 'gatehouse_keycloak_request_duration_seconds',
      help: 'Keycloak call latency, by server, operation and result.',
      labelNames: ['server', 'operation', 'result'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers
    }),
    mode: new Gauge({
      name: 'gatehouse_mode',
      help: 'How Gatehouse is deciding: 1 for the mode in force (normal, degraded, offline), 0 for the others.',
      labelNames: ['mode'] as const,
      registers,
      collect () {
        const current = bound.mode?.()
        for (const mode of MODES) this.set({ mode }, mode === current ? 1 : 0)
      }
    }),
    circuitState: new Gauge({
      name: 'gatehouse_circuit_state',
      help: 'Circuit breaker state per Keycloak server: 0 closed, 1 half-open, 2 open.',
      labelNames: ['server'] as const,
      registers,
      collect () {
        for (const { server, state } of bound.circuits?.() ?? []) this.set({ server }, CIRCUIT_STATE_VALUES[state])
      }
    }),
    circuitTransitions: new Counter({
      name: 'gatehouse_circuit_transitions_total',
      help: 'Circuit breaker state changes, by server and the state entered.',
      labelNames: ['server', 'to'] as const,
      registers
    }),
    tokenRefresh: new Counter({
      name: 'gatehouse_token_refresh_total',
      help: 'Refreshes of sessions\' Keycloak tokens, by result.',
      labelNames: ['result'] as const,
      registers
    }),
    cachedTokens: new Gauge({
      name: 'gatehouse_cached_tokens',
      help: 'Sessions\' Keycloak token sets still usable: fresh, or inside the grace period.',
      registers,
      async collect () {
        this.set(await bound.cachedTokens?.() ?? 0)
      }
    }),
    sessionsActive: new Gauge({
      name: 'gatehouse_sessions_active',
      help: 'Live browser sessions, by authentication mode.',
      labelNames: ['mode'] as const,
      registers,
      async collect () {
        for (const [mode, n] of Object.entries(await bound.sessionsActive?.() ?? {})) this.set({ mode }, n)
      }
    }),
    storeMode: new Gauge({
      name: 'gatehouse_store_mode',
      help: 'The session store (sqlite or redis) and its mode: 1 for the mode in force (normal, degraded), 0 for the other.',
      labelNames: ['store', 'mode'] as const,
      registers,
      collect () {
        const current = bound.storeMode?.()
        if (current === undefined) return
        for (const mode of STORE_MODES) this.set({ store: current.store, mode }, mode === current.mode ? 1 : 0)
      }
    }),
    loginsTotal: new Counter({
      name: 'gatehouse_logins_total',
      help: 'Logins, by authentication mode and result.',
      labelNames: ['mode', 'result'] as const,
      registers
    }),
    syncQueueDepth: new Gauge({
      name: 'gatehouse_sync_queue_depth',
      help: 'Sync queue items, by status.',
      labelNames: ['status'] as const,
      registers,
      collect () {
        for (const [status, n] of Object.entries(bound.syncQueue?.().byStatus ?? {})) this.set({ status }, n)
      }
    }),
    syncOldestPending: new Gauge({
      name: 'gatehouse_sync_oldest_pending_seconds',
      help: 'Age of the oldest sync item not yet replayed; 0 when there is none.',
      registers,
      collect () {
        this.set(bound.syncQueue?.().oldestPendingSeconds ?? 0)
      }
    }),
    syncOperations: new Counter({
      name: 'gatehouse_sync_operations_total',
      help: 'Sync items replayed to Keycloak, by operation and result (done, failed, dead, released).',
      labelNames: ['operation', 'result'] as const,
      registers
    }),
    syncReplayDuration: new Histogram({
      name: 'gatehouse_sync_replay_duration_seconds',
      help: 'Time to replay one sync item to Keycloak.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers
    }),
    serviceTokens: new Gauge({
      name: 'gatehouse_service_tokens',
      help: 'Service tokens by state: active, expiring (within service_tokens.expiry_warning_days), expired, revoked; in_grace counts previous tokens still valid after a rotation.',
      labelNames: ['state'] as const,
      registers,
      collect () {
        const counts = bound.serviceTokens?.() ?? {}
        for (const state of SERVICE_TOKEN_STATES) this.set({ state }, counts[state] ?? 0)
      }
    }),
    serviceTokenExpiry: new Gauge({
      name: 'gatehouse_service_token_expiry_timestamp_seconds',
      help: 'When each service token that is not revoked expires, in seconds since the epoch.',
      labelNames: ['name'] as const,
      registers,
      collect () {
        // Reset first: a revoked or purged token's series must go, not stay at its last value.
        this.reset()
        for (const { name, expiresAt } of bound.serviceTokenExpiries?.() ?? []) this.set({ name }, Math.floor(expiresAt / 1000))
      }
    }),
    serviceTokenGraceEnd: new Gauge({
      name: 'gatehouse_service_token_grace_end_timestamp_seconds',
      help: 'When the grace period of each previous (rotated) service token still valid ends, in seconds since the epoch.',
      labelNames: ['name'] as const,
      registers,
      collect () {
        this.reset()
        for (const { name, validUntil } of bound.serviceTokenGraces?.() ?? []) this.set({ name }, Math.floor(validUntil / 1000))
      }
    }),
    serviceTokenPreviousLastUsed: new Gauge({
      name: 'gatehouse_service_token_previous_last_used_timestamp_seconds',
      help: 'When each previous service token still inside its grace period was last used (as this sidecar saw it), in seconds since the epoch; no series before its first use.',
      labelNames: ['name'] as const,
      registers,
      collect () {
        this.reset()
        for (const { name, lastUsedAt } of bound.serviceTokenGraces?.() ?? []) if (lastUsedAt !== null) this.set({ name }, Math.floor(lastUsedAt / 1000))
      }
    }),
    policyReloads: new Counter({
      name: 'gatehouse_policy_reloads_total',
      help: 'Policy reloads (file watch, SIGHUP), by result: success, failure (rejected whole; the running policies stay), unchanged.',
      labelNames: ['result'] as const,
      registers
    }),
    alertNotifications: new Counter({
      name: 'gatehouse_alert_notifications_total',
      help: 'Alert and digest notifications, by channel (webhook, email) and result (sent, failed).',
      labelNames: ['channel', 'result'] as const,
      registers
    }),
    alertsFiring: new Gauge({
      name: 'gatehouse_alerts_firing',
      help: 'Alert instances firing now (alerts.enabled), by alert name.',
      labelNames: ['alert'] as const,
      registers,
      collect () {
        for (const [alert, n] of Object.entries(bound.alertsFiring?.() ?? {})) this.set({ alert }, n)
      }
    }),
    passwordResets: new Counter({
      name: 'gatehouse_password_resets_total',
      help: 'Password reset requests and completions, by result.',
      labelNames: ['result'] as const,
      registers
    })
  }
  metrics.buildInfo.set({ version: VERSION }, 1)
  // Children resolved once (no label object is validated or hashed when the app fails), and
  // each exposed at 0 from the start, so that rate() sees the first error.
  const upstreamErrorChildren = new Map(UPSTREAM_ERROR_KINDS.map((kind) => {
    const child = metrics.upstreamErrors.labels({ kind })
    child.inc(0)
    return [kind, child]
  }))
  // At 0 from the start, so that an alert on increase() sees the first failed reload.
  for (const result of POLICY_RELOAD_RESULTS) metrics.policyReloads.inc({ result }, 0)
  const add = (pending: Map<string, number>, key: string): void => { pending.set(key, (pending.get(key) ?? 0) + 1) }
  return {
    ...metrics,
    bind: (s) => Object.assign(bound, s),
    recordRequest: (decision, authMode, status, seconds) => {
      let byMode = pendingRequests.get(decision)
      if (byMode === undefined) pendingRequests.set(decision, byMode = new Map())
      let counts = byMode.get(authMode)
      if (counts === undefined) byMode.set(authMode, counts = [0, 0, 0, 0, 0, 0])
      // Status classes 1xx to 5xx; Node sends nothing outside 100 to 599.
      const index = status >= 500 ? 5 : status < 100 ? 1 : Math.floor(status / 100)
      counts[index] = (counts[index] as number) + 1
      metrics.requestDuration.observe('', seconds)
    },
    recordUpstreamError: (kind) => upstreamErrorChildren.get(kind)?.inc(),
    recordVerification: (result) => add(pendingVerifications, result),
    recordDecision: (entrypoint, decision, seconds) => {
      let byKind = pendingDecisions.get(entrypoint)
      if (byKind === undefined) pendingDecisions.set(entrypoint, byKind = new Map())
      byKind.set(decision, (byKind.get(decision) ?? 0) + 1)
      metrics.decisionDuration.observe(entrypoint, seconds)
    }
  }
}
