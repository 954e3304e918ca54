import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/**
 * Every `gatehouse_*` metric, on a registry of its own per app instance (never prom-client's
 * global one: tests build many apps in one process).
 */
export interface Metrics {
  registry: Registry
  /** Requests by decision (allow, deny, redirect, error) and how the caller was authenticated. */
  requestsTotal: Counter<'decision' | 'auth_mode'>
  /** Whole request time on the proxy listener, upstream included. */
  requestDuration: Histogram
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
}

/** Values of `gatehouse_circuit_state`. */
export const CIRCUIT_STATE_VALUES = { closed: 0, half_open: 1, open: 2 } as const

/** The modes `gatehouse_mode` reports. */
export const MODES = ['normal', 'degraded', 'offline'] as const

/** The per-request metric updates, with label children cached (see {@link createMetrics}). */
export interface HotPathMetrics {
  /** One request decided and answered, `seconds` after it arrived. */
  recordRequest: (decision: string, authMode: string, seconds: number) => void
  /** One bearer-token check. */
  recordVerification: (result: string) => void
}

/** Sources the gauges read at scrape time. */
export interface GaugeSources {
  /** Seconds since the JWKS in use was fetched, or null when there is none. */
  jwksAgeSeconds: () => number | null
  /** The mode in force. */
  mode: () => typeof MODES[number]
  /** Each server's circuit state. */
  circuits: () => Array<{ server: string, state: keyof typeof CIRCUIT_STATE_VALUES }>
  /** Usable cached token sets. */
  cachedTokens: () => number
  /** Live sessions by mode. */
  sessionsActive: () => Record<string, number>
  /** Sync queue items by status, and the oldest unfinished one's age. */
  syncQueue: () => { byStatus: Record<string, number>, oldestPendingSeconds: number | null }
}

/** Builds the registry and every metric; gauges read `sources` lazily, at scrape time. */
export function createMetrics (sources: Partial<GaugeSources> = {}): Metrics & HotPathMetrics & { bind: (s: Partial<GaugeSources>) => void } {
  const registry = new Registry()
  const bound: Partial<GaugeSources> = { ...sources }
  collectDefaultMetrics({ register: registry, prefix: 'gatehouse_' })
  const registers = [registry]
  // prom-client validates and hashes the label object on every update, which cost more than
  // the rest of a cached token check (npm run bench): on the request path counts go into
  // plain maps, and each counter's `collect` (run before every read) moves them in.
  const pendingRequests = new Map<string, number>()
  const pendingVerifications = new Map<string, number>()
  const metrics: Metrics = {
    registry,
    requestsTotal: new Counter({
      name: 'gatehouse_requests_total',
      help: 'Requests decided, by decision and authentication mode.',
      labelNames: ['decision', 'auth_mode'] as const,
      registers,
      collect () {
        for (const [key, n] of pendingRequests) {
          const [decision, mode] = key.split('|') as [string, string]
          this.inc({ decision, auth_mode: mode }, n)
        }
        pendingRequests.clear()
      }
    }),
    requestDuration: new Histogram({
      name: 'gatehouse_request_duration_seconds',
      help: 'Time from request to response on the proxy listener, upstream included.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
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
      collect () {
        this.set(bound.cachedTokens?.() ?? 0)
      }
    }),
    sessionsActive: new Gauge({
      name: 'gatehouse_sessions_active',
      help: 'Live browser sessions, by authentication mode.',
      labelNames: ['mode'] as const,
      registers,
      collect () {
        for (const [mode, n] of Object.entries(bound.sessionsActive?.() ?? {})) this.set({ mode }, n)
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
    })
  }
  const add = (pending: Map<string, number>, key: string): void => { pending.set(key, (pending.get(key) ?? 0) + 1) }
  return {
    ...metrics,
    bind: (s) => Object.assign(bound, s),
    recordRequest: (decision, authMode, seconds) => {
      add(pendingRequests, `${decision}|${authMode}`)
      metrics.requestDuration.observe(seconds)
    },
    recordVerification: (result) => add(pendingVerifications, result)
  }
}
