import { resolve } from 'node:path'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { systemClock, type Clock } from './clock.ts'
import type { Config } from './config/schema.ts'
import { accessLogVia, type AccessLog } from './access-log.ts'
import { adminPlugin } from './admin/plugin.ts'
import { statusReport, type StatusReport } from './admin/status.ts'
import { loadPolicies, type PolicySet } from './authz/policy.ts'
import { ModeTracker } from './breaker/mode.ts'
import { createDecider, type Decide } from './decision/decide.ts'
import { createKeycloakClient, type KeycloakClient } from './keycloak/client.ts'
import { AccessTokenVerifier } from './keycloak/verify-token.ts'
import { createMetrics, type HotPathMetrics, type Metrics } from './metrics/registry.ts'
import { createProxyServer, genericErrorHandler } from './proxy/server.ts'
import { schemaVersion, type Db } from './store/db.ts'

/** What `buildApp` needs from outside: HOUSE-STYLE §2, no module-level singletons. */
export interface AppDeps {
  db: Db
  log: Logger
  /** Where access lines go; through `log` when absent, none when null. */
  accessLog?: AccessLog | null
  clock?: Clock
  /** Already-loaded policies; read from `policies.dir` when absent. */
  policy?: PolicySet
}

/** A built, not yet listening, Gatehouse. */
export interface App {
  proxy: FastifyInstance
  admin: FastifyInstance
  decide: Decide
  keycloak: KeycloakClient
  verifier: AccessTokenVerifier
  mode: ModeTracker
  metrics: Metrics & HotPathMetrics
  policy: PolicySet
  status: () => StatusReport
  /**
   * Loads the stored JWKS (synchronously, before this returns) and starts background work:
   * JWKS refreshes and health checks. Never waits on Keycloak; the returned promise settles
   * after the first health round.
   */
  start: () => Promise<void>
  /** Marks the app as shutting down (readiness fails) and closes both listeners. */
  close: () => Promise<void>
}

/**
 * Builds every part of Gatehouse and wires them: the Keycloak client, the decision function,
 * the proxy listener and the admin listener. Never listens; the caller decides where.
 */
export function buildApp (config: Config, deps: AppDeps): App {
  const clock = deps.clock ?? systemClock
  const log = deps.log
  const startedAt = clock.now()
  const metrics = createMetrics()
  const policy = deps.policy ?? loadPolicies(resolve(config.base_dir, config.policies.dir), config.policies.default)

  let mode: ModeTracker | undefined
  const keycloak = createKeycloakClient(config, { db: deps.db, clock, log, metrics, afterHealthRound: () => mode?.evaluate() })
  const { pool, jwks } = keycloak
  mode = new ModeTracker({
    keycloakReachable: () => pool.reachable(),
    // Bearer tokens stay verifiable while the stored keys are inside the grace period.
    cachedCredentialsUsable: () => { const age = jwks.ageSeconds(); return age !== null && age * 1000 < keycloak.gracePeriodMs }
  }, log.child({ module: 'mode' }))
  const tracker = mode
  pool.onChange(() => tracker.evaluate())
  metrics.bind({
    jwksAgeSeconds: () => jwks.ageSeconds(),
    mode: () => tracker.mode,
    circuits: () => pool.status().map((s) => ({ server: s.server, state: s.state }))
  })

  const clientIds = [config.keycloak.client_id, ...config.keycloak.audiences]
  const verifier = new AccessTokenVerifier({
    jwks,
    issuer: config.keycloak.issuer,
    audiences: clientIds,
    algorithms: config.tokens.algorithms,
    clockSkewSeconds: config.tokens.clock_skew_seconds,
    cacheMaxEntries: config.tokens.cache_max_entries,
    clock,
    metrics
  })
  const decide = createDecider({ policy, verifier, headers: config.headers, clientIds, prefix: config.server.prefix, log: log.child({ module: 'decision' }) })

  let closing = false
  const status = (): StatusReport => statusReport({
    config,
    clock,
    startedAt,
    keycloak,
    mode: tracker.mode,
    verifier,
    databasePath: config.database.path === ':memory:' ? ':memory:' : resolve(config.base_dir, config.database.path),
    schemaVersion: () => schemaVersion(deps.db)
  })

  const accessLog = config.log.access_log ? (deps.accessLog === undefined ? accessLogVia(log) : deps.accessLog) : null
  const proxy = createProxyServer({ config, decide, log: log.child({ module: 'proxy' }), metrics, accessLog })
  const admin = Fastify({ loggerInstance: log.child({ module: 'admin' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
  admin.setErrorHandler(genericErrorHandler)
  void admin.register(adminPlugin, { metrics, db: deps.db, clock, status, closing: () => closing })

  return {
    proxy,
    admin,
    decide,
    keycloak,
    verifier,
    mode: tracker,
    metrics,
    policy,
    status,
    start: () => {
      jwks.start()
      return keycloak.health.start().then(() => tracker.settle())
    },
    close: async () => {
      closing = true
      jwks.stop()
      keycloak.health.stop()
      await Promise.allSettled([proxy.close(), admin.close()])
    }
  }
}
