import { randomUUID } from 'node:crypto'
import { resolve } from 'node:path'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { systemClock, type Clock } from './clock.ts'
import type { Config } from './config/schema.ts'
import { adminPlugin } from './admin/plugin.ts'
import { statusReport, type StatusReport } from './admin/status.ts'
import { loadPolicies, type PolicySet } from './authz/policy.ts'
import { createDecider, type Decide } from './decision/decide.ts'
import { KeycloakPool } from './keycloak/failover.ts'
import { JwksManager } from './keycloak/jwks.ts'
import { AccessTokenVerifier } from './keycloak/verify-token.ts'
import { createMetrics, type HotPathMetrics, type Metrics } from './metrics/registry.ts'
import { accessLogVia, type AccessLog } from './access-log.ts'
import { proxyPlugin } from './proxy/plugin.ts'
import { schemaVersion, type Db } from './store/db.ts'
import { JwksCacheRepository } from './store/jwks-cache.ts'

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
  pool: KeycloakPool
  jwks: JwksManager
  verifier: AccessTokenVerifier
  metrics: Metrics & HotPathMetrics
  policy: PolicySet
  status: () => StatusReport
  /** Starts background work (JWKS load and refresh). Never waits on Keycloak. */
  start: () => void
  /** Marks the app as shutting down (readiness fails) and closes both listeners. */
  close: () => Promise<void>
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * Builds every part of Gatehouse and wires them: the proxy listener, the admin listener and
 * the decision function they share. Never listens; the caller decides where.
 */
export function buildApp (config: Config, deps: AppDeps): App {
  const clock = deps.clock ?? systemClock
  const log = deps.log
  const startedAt = clock.now()
  const metrics = createMetrics()
  const policy = deps.policy ?? loadPolicies(resolve(config.base_dir, config.policies.dir), config.policies.default)

  const servers = [{ url: config.keycloak.server as string }]
  const pool = new KeycloakPool({
    servers,
    realm: config.keycloak.realm,
    timeoutMs: config.keycloak.timeout_ms,
    enabled: config.feature_flags.keycloak_enabled,
    clock,
    log: log.child({ module: 'keycloak' }),
    metrics
  })
  const jwks = new JwksManager({
    issuer: config.keycloak.issuer,
    repository: new JwksCacheRepository(deps.db),
    pool,
    clock,
    log: log.child({ module: 'jwks' }),
    metrics,
    refreshIntervalMs: config.keycloak.jwks.refresh_interval_seconds * 1000,
    minRefreshIntervalMs: config.keycloak.jwks.min_refresh_interval_seconds * 1000
  })
  metrics.bind({ jwksAgeSeconds: () => jwks.ageSeconds() })
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
  const decide = createDecider({
    policy,
    verifier,
    headers: config.headers,
    clientIds,
    prefix: config.server.prefix,
    log: log.child({ module: 'decision' })
  })

  let closing = false
  const status = (): StatusReport => statusReport({
    config,
    clock,
    startedAt,
    pool,
    jwks,
    verifier,
    databasePath: config.database.path === ':memory:' ? ':memory:' : resolve(config.base_dir, config.database.path),
    schemaVersion: () => schemaVersion(deps.db)
  })

  const proxy = Fastify({
    loggerInstance: log.child({ module: 'proxy' }) as FastifyBaseLogger,
    // One access line of our own per request (recordRequest) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    trustProxy: config.server.trust_proxy,
    genReqId: (req) => {
      const incoming = req.headers['x-request-id']
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID()
    },
    // Long paths are legitimate for proxied apps; the default router limit is 100 characters.
    routerOptions: { maxParamLength: 8192 },
    // No child logger per request: it cost as much as the decision itself (npm run bench).
    // The few request-scoped lines carry `reqId` themselves.
    childLoggerFactory: (logger) => logger,
    return503OnClosing: true
  })
  proxy.decorateRequest('decision', null)
  proxy.setErrorHandler(genericErrorHandler)
  const accessLog = config.log.access_log ? (deps.accessLog === undefined ? accessLogVia(log) : deps.accessLog) : null
  proxy.addHook('onResponse', (request, reply, done) => {
    recordRequest(request, reply, metrics, accessLog)
    done()
  })
  void proxy.register(proxyPlugin, { config, decide })

  const admin = Fastify({ loggerInstance: log.child({ module: 'admin' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
  admin.setErrorHandler(genericErrorHandler)
  void admin.register(adminPlugin, { metrics, db: deps.db, clock, status, closing: () => closing })

  return {
    proxy,
    admin,
    decide,
    pool,
    jwks,
    verifier,
    metrics,
    policy,
    status,
    start: () => jwks.start(),
    close: async () => {
      closing = true
      jwks.stop()
      await Promise.allSettled([proxy.close(), admin.close()])
    }
  }
}

/** One root error handler (HOUSE-STYLE §4): client errors keep their status, 5xx bodies say nothing. */
function genericErrorHandler (error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const status = typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
  if (status >= 500) request.log.error({ reqId: request.id, err: error }, 'request failed')
  else request.log.debug({ reqId: request.id, code: error.code }, 'request rejected')
  return reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8')
    .send({ error: status >= 500 ? 'internal_error' : 'bad_request' })
}

/** One access line and the request metrics (never the query string: it may hold codes or tokens). */
function recordRequest (request: FastifyRequest, reply: FastifyReply, metrics: HotPathMetrics, accessLog: AccessLog | null): void {
  const decision = request.decision
  const kind = decision?.kind ?? 'none'
  const identity = decision !== null && decision.kind !== 'redirect' ? decision.identity : null
  const authMode = identity?.authMode ?? 'none'
  metrics.recordRequest(kind, authMode, reply.elapsedTime / 1000)
  if (accessLog === null) return
  const target = decision?.kind === 'allow' ? decision.target : request.url
  const q = target.indexOf('?')
  accessLog.write({
    reqId: request.id,
    method: request.method,
    path: (q === -1 ? target : target.slice(0, q)).slice(0, 512),
    status: reply.statusCode,
    decision: kind,
    reason: decision?.reason ?? null,
    rule: decision?.rule ?? null,
    authMode,
    user: identity?.user ?? null,
    ip: request.ip,
    latencyMs: Math.round(reply.elapsedTime * 100) / 100
  })
}
