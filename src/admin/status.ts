import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { Mode } from '../breaker/mode.ts'
import type { CircuitState } from '../breaker/circuit-breaker.ts'
import type { KeycloakClient } from '../keycloak/client.ts'
import type { DiscoveryStatus } from '../keycloak/metadata.ts'
import type { ClientAuthState } from '../keycloak/oidc.ts'
import type { AccessTokenVerifier } from '../keycloak/verify-token.ts'
import type { PolicyStatus } from '../authz/policy-store.ts'
import type { StoreHealth } from '../store/session-store.ts'
import type { SyncStats } from '../store/sync-queue.ts'
import type { ServiceTokenStatus } from '../service-token/service.ts'
import { VERSION } from '../version.ts'
import type { OperationsReport } from './operations.ts'

/** One Keycloak server as `/status` reports it. */
export interface ServerReport {
  server: string
  priority: number
  weight: number
  state: CircuitState
  consecutive_failures: number
  last_success_at: string | null
  last_failure_at: string | null
  last_error_kind: string | null
  last_error: string | null
  opened_at: string | null
  /** When an open circuit's single probe is due. */
  probe_after: string | null
}

/** What every `/status` reports (the original system's `get_status()`). Field names are snake_case, as in the config. */
export interface StatusReportBase {
  service: 'gatehouse'
  version: string
  environment: string | null
  started_at: string
  uptime_seconds: number
  /** This process; `worker` is its slot when `server.workers` > 1 (a scrape or call reaches one of them). */
  process: { pid: number, worker: number | null, workers: number }
  mode: Mode
  keycloak: {
    enabled: boolean
    issuer: string
    realm: string
    strategy: string
    reachable: boolean
    servers: ServerReport[]
    discovery: DiscoveryStatus
    /** Whether Keycloak accepts Gatehouse's client credentials (`failed`: single sign-on is misconfigured). */
    client_auth: { state: ClientAuthState['state'], error: string | null, since: string | null }
  }
  jwks: { keys: number, key_ids: string[], fetched_at: string | null, age_seconds: number | null, source: string | null, usable_until: string | null }
  tokens: { verified_cache_entries: number }
  /** Live browser sessions by mode, and session token sets still usable (fresh or in grace). */
  sessions: { active: Record<string, number>, cached_tokens: number }
  /**
   * The session store (`store.sessions`): `degraded` while Redis is unreachable and sessions
   * carry on from the local SQLite copy; `pending_replay` is what waits to be replayed to it.
   */
  store: { sessions: StoreHealth['store'], mode: StoreHealth['mode'], reason: string | null, pending_replay: number }
  /** The sync queue: items by status, the oldest unfinished one's age, the latest error. */
  sync: { pending: number, processing: number, failed: number, dead: number, done: number, oldest_pending_seconds: number | null, last_error: SyncStats['lastError'] }
  database: { path: string, schema_version: number }
  /** Service tokens by state, those expiring within `service_tokens.expiry_warning_days`, and their alerts. */
  service_tokens?: ServiceTokenStatus
  /** The policies in force: version (content hash), when loaded, files, rule and role counts, the last reload. Absent when not known. */
  policy?: PolicyStatus
}

/**
 * What `/status` reports: {@link StatusReportBase}, and from a running instance the last
 * hour, its alerts and since when the mode holds ({@link OperationsReport}).
 */
export type StatusReport = StatusReportBase & Partial<OperationsReport>

/** The parts a status report reads. */
export interface StatusSources {
  config: Config
  clock: Clock
  startedAt: number
  keycloak: KeycloakClient
  mode: Mode
  verifier: AccessTokenVerifier
  databasePath: string
  schemaVersion: () => number
  sessions: () => Promise<{ active: Record<string, number>, cachedTokens: number }>
  /** The session store's state. */
  store: () => StoreHealth
  sync: () => SyncStats
  /** The app client's credentials as Keycloak last judged them; `unknown` when absent. */
  clientAuth?: () => ClientAuthState
  /** The cluster worker slot of this process; null or absent in a single process. */
  worker?: number | null
  /** Service tokens' report; left out of the report when absent. */
  serviceTokens?: () => ServiceTokenStatus
  /** The policy store's report. */
  policy?: () => PolicyStatus
  /** The serve process's last hour, alerts and mode history; absent for `gatehouse status` without an instance. */
  operations?: () => OperationsReport
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

/** Builds the `/status` report. */
export async function statusReport (s: StatusSources): Promise<StatusReport> {
  const { pool, jwks, metadata } = s.keycloak
  const age = jwks.ageSeconds()
  const sessions = await s.sessions()
  const store = s.store()
  return {
    service: 'gatehouse',
    version: VERSION,
    environment: s.config.environment,
    started_at: new Date(s.startedAt).toISOString(),
    uptime_seconds: Math.round((s.clock.now() - s.startedAt) / 1000),
    process: { pid: process.pid, worker: s.worker ?? null, workers: s.config.server.workers },
    mode: s.mode,
    keycloak: {
      enabled: pool.enabled,
      issuer: s.config.keycloak.issuer,
      realm: s.config.keycloak.realm,
      strategy: pool.strategy,
      reachable: pool.reachable(),
      servers: pool.status().map((v) => ({
        server: v.server,
        priority: v.priority,
        weight: v.weight,
        state: v.state,
        consecutive_failures: v.consecutiveFailures,
        last_success_at: iso(v.lastSuccessAt),
        last_failure_at: iso(v.lastFailureAt),
        last_error_kind: v.lastErrorKind,
        last_error: v.lastError,
        opened_at: iso(v.openedAt),
        probe_after: iso(v.probeAfter)
      })),
      discovery: metadata.status(),
      client_auth: clientAuthReport(s.clientAuth?.() ?? { state: 'unknown', error: null, since: null })
    },
    jwks: {
      keys: jwks.keyIds().length,
      key_ids: jwks.keyIds(),
      fetched_at: iso(jwks.fetchedAt),
      age_seconds: age === null ? null : Math.round(age),
      source: jwks.source,
      usable_until: jwks.fetchedAt === null ? null : iso(jwks.fetchedAt + s.keycloak.gracePeriodMs)
    },
    tokens: { verified_cache_entries: s.verifier.cacheSize },
    sessions: { active: sessions.active, cached_tokens: sessions.cachedTokens },
    store: { sessions: store.store, mode: store.mode, reason: store.reason, pending_replay: store.pendingReplay },
    sync: (({ byStatus, oldestPendingSeconds, lastError }) => ({ ...byStatus, oldest_pending_seconds: oldestPendingSeconds, last_error: lastError }))(s.sync()),
    database: { path: s.databasePath, schema_version: s.schemaVersion() },
    ...(s.serviceTokens !== undefined ? { service_tokens: s.serviceTokens() } : {}),
    ...(s.policy !== undefined ? { policy: s.policy() } : {}),
    ...s.operations?.()
  }
}

function clientAuthReport (auth: ClientAuthState): StatusReport['keycloak']['client_auth'] {
  return { state: auth.state, error: auth.error, since: iso(auth.since) }
}
