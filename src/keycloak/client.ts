import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { Db } from '../store/db.ts'
import { JwksCacheRepository } from '../store/jwks-cache.ts'
import { MetaRepository } from '../store/meta.ts'
import { KeycloakPool, type ServerSpec } from './failover.ts'
import { HealthMonitor } from './health.ts'
import { JwksManager } from './jwks.ts'
import { ProviderMetadata } from './metadata.ts'
import { ProviderLayout } from './provider.ts'

/** Everything Gatehouse uses of Keycloak, built from the configuration. */
export interface KeycloakClient {
  pool: KeycloakPool
  metadata: ProviderMetadata
  jwks: JwksManager
  health: HealthMonitor
  /** Milliseconds cached Keycloak material stays usable while Keycloak is unreachable. */
  gracePeriodMs: number
}

/** The back-channel servers the configuration names: `keycloak.ha.servers`, or `keycloak.server` alone. */
export function configuredServers (config: Config): ServerSpec[] {
  const kc = config.keycloak
  if (kc.ha.enabled) return kc.ha.servers.map((s) => ({ url: s.server, priority: s.priority, weight: s.weight }))
  return [{ url: kc.server as string }]
}

/**
 * Builds the Keycloak side of Gatehouse: the server pool with its breakers, the metadata,
 * the JWKS and the health monitor. Nothing here touches the network until started.
 */
export function createKeycloakClient (config: Config, deps: { db: Db, clock: Clock, log: Logger, metrics: Metrics, afterHealthRound?: () => void }): KeycloakClient {
  const kc = config.keycloak
  const { clock, metrics } = deps
  const servers = configuredServers(config)
  const layout = new ProviderLayout({ kind: kc.kind, issuer: kc.issuer, realm: kc.realm, servers: servers.map((s) => s.url) })
  const pool = new KeycloakPool({
    servers,
    layout,
    timeoutMs: kc.timeout_ms,
    enabled: config.feature_flags.keycloak_enabled,
    strategy: kc.ha.strategy,
    breaker: { enabled: kc.resilience.enabled, failureThreshold: kc.resilience.failure_threshold, cooldownMs: kc.resilience.cooldown_seconds * 1000 },
    clock,
    log: deps.log.child({ module: 'keycloak' }),
    metrics
  })
  const metadata = new ProviderMetadata({ layout, overrides: kc.endpoints, repository: new MetaRepository(deps.db), clock, log: deps.log.child({ module: 'keycloak' }) })
  metadata.load()
  const jwks = new JwksManager({
    issuer: kc.issuer,
    repository: new JwksCacheRepository(deps.db),
    pool,
    clock,
    log: deps.log.child({ module: 'jwks' }),
    metrics,
    refreshIntervalMs: kc.jwks.refresh_interval_seconds * 1000,
    minRefreshIntervalMs: kc.jwks.min_refresh_interval_seconds * 1000,
    jwksUri: async () => (await metadata.require(pool, 'jwks')).jwks as string
  })
  const health = new HealthMonitor({
    pool,
    metadata,
    clock,
    log: deps.log.child({ module: 'health' }),
    cacheMs: kc.resilience.health_check_cache_seconds * 1000,
    ...(deps.afterHealthRound !== undefined ? { afterRound: deps.afterHealthRound } : {})
  })
  return { pool, metadata, jwks, health, gracePeriodMs: kc.resilience.token_grace_period_hours * 3_600_000 }
}
