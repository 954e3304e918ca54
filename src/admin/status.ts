import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { KeycloakPool, ServerStatus } from '../keycloak/failover.ts'
import type { JwksManager } from '../keycloak/jwks.ts'
import type { AccessTokenVerifier } from '../keycloak/verify-token.ts'
import { VERSION } from '../version.ts'

/** How Gatehouse is deciding right now (DESIGN §1). */
export type Mode = 'normal' | 'degraded' | 'offline'

/** What `/status` reports. Field names are snake_case, as in the config and the CLI's JSON. */
export interface StatusReport {
  service: 'gatehouse'
  version: string
  environment: string | null
  started_at: string
  uptime_seconds: number
  mode: Mode
  keycloak: {
    enabled: boolean
    issuer: string
    realm: string
    servers: Array<{
      server: string
      consecutive_failures: number
      last_success_at: string | null
      last_failure_at: string | null
      last_error_kind: string | null
      last_error: string | null
    }>
  }
  jwks: { keys: number, key_ids: string[], fetched_at: string | null, age_seconds: number | null, source: string | null }
  tokens: { verified_cache_entries: number }
  database: { path: string, schema_version: number }
}

/** The parts a status report reads. */
export interface StatusSources {
  config: Config
  clock: Clock
  startedAt: number
  pool: KeycloakPool
  jwks: JwksManager
  verifier: AccessTokenVerifier
  databasePath: string
  schemaVersion: () => number
}

/**
 * The mode from what the pool saw: `normal` while some server answered its last call,
 * `degraded` while none does but validation keys are at hand, `offline` otherwise.
 */
export function currentMode (servers: readonly ServerStatus[], enabled: boolean, haveKeys: boolean): Mode {
  const reachable = enabled && servers.some((s) => s.consecutiveFailures === 0)
  if (reachable) return 'normal'
  return haveKeys ? 'degraded' : 'offline'
}

/** Builds the `/status` report. */
export function statusReport (s: StatusSources): StatusReport {
  const servers = s.pool.status()
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())
  return {
    service: 'gatehouse',
    version: VERSION,
    environment: s.config.environment,
    started_at: new Date(s.startedAt).toISOString(),
    uptime_seconds: Math.round((s.clock.now() - s.startedAt) / 1000),
    mode: currentMode(servers, s.pool.enabled, s.jwks.keySet() !== null),
    keycloak: {
      enabled: s.pool.enabled,
      issuer: s.config.keycloak.issuer,
      realm: s.config.keycloak.realm,
      servers: servers.map((v) => ({
        server: v.server,
        consecutive_failures: v.consecutiveFailures,
        last_success_at: iso(v.lastSuccessAt),
        last_failure_at: iso(v.lastFailureAt),
        last_error_kind: v.lastErrorKind,
        last_error: v.lastError
      }))
    },
    jwks: {
      keys: s.jwks.keyIds().length,
      key_ids: s.jwks.keyIds(),
      fetched_at: iso(s.jwks.fetchedAt),
      age_seconds: s.jwks.ageSeconds() === null ? null : Math.round(s.jwks.ageSeconds() ?? 0),
      source: s.jwks.source
    },
    tokens: { verified_cache_entries: s.verifier.cacheSize },
    database: { path: s.databasePath, schema_version: s.schemaVersion() }
  }
}
