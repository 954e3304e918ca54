import { resolve } from 'node:path'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { WorkerRole } from './cluster/worker.ts'
import { systemClock, type Clock } from './clock.ts'
import type { Config } from './config/schema.ts'
import { accessLogVia, type AccessLog } from './access-log.ts'
import { droppedLogLines } from './log.ts'
import { adminPlugin } from './admin/plugin.ts'
import { statusReport, type StatusReport } from './admin/status.ts'
import { Operations } from './admin/operations.ts'
import { createMailer } from './notify/mailer.ts'
import { mailerOutbox, PasswordResetService } from './session/password-reset.ts'
import { PasswordResetRepository } from './store/password-resets.ts'
import { loadPolicies, type PolicySet } from './authz/policy.ts'
import { PolicyStore } from './authz/policy-store.ts'
import { cachedMaterialUsable, ModeTracker } from './breaker/mode.ts'
import { createDecider, createIdentifier, type Decide, type DeciderDeps, type PolicySource, type ServiceTokenLookup, type SessionLookup } from './decision/decide.ts'
import { identityFromClaims, type ClaimsReader } from './keycloak/claims.ts'
import { createKeycloakClient, type KeycloakClient } from './keycloak/client.ts'
import type { JwksManager } from './keycloak/jwks.ts'
import { AccessTokenVerifier } from './keycloak/verify-token.ts'
import { createMetrics, type HotPathMetrics, type Metrics } from './metrics/registry.ts'
import { createProxyServer, genericErrorHandler } from './proxy/server.ts'
import { spoofableHeaders } from './decision/identity-headers.ts'
import { fastifyListener, lazyListener, type Listener } from './listener.ts'
import { extAuthzHttpRoutes } from './extauthz/http.ts'
import { forwardAuthRoutes } from './routes/forward-auth.ts'
import { databaseFile, schemaVersion, type Db } from './store/db.ts'
import { ConfigError } from './errors.ts'
import type { OidcClient } from './keycloak/oidc.ts'
import { createSync, oidcClientFor, type SyncParts } from './sync/create.ts'
import { CookieJar, cookiesSecure } from './session/cookie.ts'
import { LoginService } from './session/login.ts'
import { PasswordChanger } from './session/password-change.ts'
import { sessionRoutes } from './session/routes.ts'
import { SessionService } from './session/service.ts'
import { AuditLogRepository } from './store/audit-log.ts'
import { KeyRing } from './store/crypto.ts'
import { openSessionStore } from './store/open-session-store.ts'
import { RedisServiceTokenShare } from './store/redis-service-tokens.ts'
import { RedisSessionStore } from './store/redis-session-store.ts'
import type { SessionStore } from './store/session-store.ts'
import { TokenCacheRepository } from './store/token-cache.ts'
import { UsersRepository } from './store/users.ts'
import { configuredDelivery } from './service-token/deliver.ts'
import { ServiceTokenService } from './service-token/service.ts'

/** What `buildApp` needs from outside: HOUSE-STYLE §2, no module-level singletons. */
export interface AppDeps {
  db: Db
  log: Logger
  /** Where access lines go; through `log` when absent, none when null. */
  accessLog?: AccessLog | null
  clock?: Clock
  /** Already-loaded policies; read from `policies.dir` when absent. */
  policy?: PolicySet
  /**
   * Which cluster worker this is (`server.workers` > 1). Only the first (the leader) runs the
   * work needed once per host: the sync queue's periodic replay (a write is still replayed at
   * once by the worker that queued it; the queue's leases keep two from replaying one item).
   * Absent in a single process, which does everything.
   */
  worker?: WorkerRole
  /**
   * Given the app's registry, what `/metrics` serves: a cluster worker's is every worker's,
   * summed (see cluster/worker.ts). The registry alone when absent.
   */
  metricsSource?: (registry: Registry) => () => Promise<string>
  /** The session store; the one `store.sessions` names when absent. */
  sessionStore?: SessionStore
}

/** A built, not yet listening, Gatehouse. */
export interface App {
  /** The configuration it was built from. */
  config: Config
  proxy: FastifyInstance
  admin: FastifyInstance
  /** Every listener, in the order they are bound: proxy, admin, then gRPC when enabled. */
  listeners: readonly Listener[]
  decide: Decide
  keycloak: KeycloakClient
  verifier: AccessTokenVerifier
  mode: ModeTracker
  metrics: Metrics & HotPathMetrics
  /** The policy set in force (the store's current one). */
  readonly policy: PolicySet
  /** The policies, reloadable: SIGHUP and the directory watch call {@link PolicyStore.reload}. */
  policies: PolicyStore
  sessions: SessionService
  /** Service tokens (issue 16): the request-side check, reports, automatic rotation. */
  serviceTokens: ServiceTokenService
  login: LoginService
  sync: SyncParts
  oidc: OidcClient
  /** The last hour, alerts and the daily digest (tests drive it with their clock). */
  operations: Operations
  status: () => Promise<StatusReport>
  /**
   * Loads the stored JWKS (synchronously, before this returns) and starts background work:
   * JWKS refreshes, health checks and (with `policies.watch`) the policy directory watch. Never waits on Keycloak; the returned promise settles
   * after the first health round and the first JWKS refresh.
   */
  start: () => Promise<void>
  /** Marks the app as shutting down (readiness fails) and closes every listener. */
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
  const loadConfigured = (): PolicySet => loadPolicies(resolve(config.base_dir, config.policies.dir), config.policies.default)
  const policy = deps.policy ?? loadConfigured()
  for (const warning of policy.warnings) log.warn({ dir: config.policies.dir }, warning)
  const policies = new PolicyStore(policy, { load: loadConfigured, clock, log: log.child({ module: 'policy' }), debounceMs: config.policies.reload_debounce_ms })
  policies.onReload((outcome) => { metrics.policyReloads.inc({ result: outcome.result }) })

  let mode: ModeTracker | undefined
  const keycloak = createKeycloakClient(config, { db: deps.db, clock, log, metrics, afterHealthRound: () => mode?.evaluate() })
  const { pool, jwks } = keycloak
  const ring = new KeyRing(config.secrets.encryption_keys)
  const tokenCache = new TokenCacheRepository(deps.db, ring)
  mode = new ModeTracker({
    keycloakReachable: () => pool.reachable(),
    // Bearer tokens stay verifiable while the stored keys are inside the grace period, and
    // sessions while their cached tokens are.
    cachedCredentialsUsable: () => cachedMaterialUsable(jwks.ageSeconds(), keycloak.gracePeriodMs, () => tokenCache.countUsable(clock.now(), keycloak.gracePeriodMs))
  }, log.child({ module: 'mode' }))
  const tracker = mode
  pool.onChange(() => tracker.evaluate())
  // The client authentication method must be one the provider takes: refused at start when
  // the stored discovery says so, reported once when a new document does.
  const methodProblem = (methods: readonly string[] | null): string | null =>
    methods !== null && methods.length > 0 && !methods.includes(config.keycloak.client_auth_method) ? methods.join(', ') : null
  const refusedMethods = methodProblem(keycloak.metadata.endpoints.authMethods)
  if (refusedMethods !== null) {
    throw new ConfigError('ERR_CONFIG_INVALID', `invalid configuration: keycloak.client_auth_method: expected one the provider supports (${refusedMethods}), received ${config.keycloak.client_auth_method}`,
      [{ path: 'keycloak.client_auth_method', expected: `one the provider supports (${refusedMethods})`, received: config.keycloak.client_auth_method }])
  }
  keycloak.metadata.onChange((endpoints) => {
    const methods = methodProblem(endpoints.authMethods)
    if (methods !== null) log.error({ supported: methods, configured: config.keycloak.client_auth_method }, 'the provider does not support keycloak.client_auth_method: code exchanges and refreshes will fail')
  })
  if (config.keycloak.kind === 'generic') {
    log.info({ issuer: config.keycloak.issuer }, 'generic OpenID provider: the Admin API, the sync queue and password pushes are off (they are Keycloak\'s); password changes are local only')
  }
  metrics.bind({
    logLinesDropped: droppedLogLines(log),
    jwksAgeSeconds: () => jwks.ageSeconds(),
    mode: () => tracker.mode,
    circuits: () => pool.status().map((s) => ({ server: s.server, state: s.state }))
  })

  const verifier = tokenVerifier(config, jwks, clock, metrics)
  const claims = claimsReader(config)
  // Tokens of a key Keycloak withdrew are forgotten at once, not at their exp (issue 9 item 8).
  jwks.onKeysWithdrawn((kids) => { verifier.forgetKeys(kids) })
  const oidc = oidcClientFor(config, keycloak, clock, { clientId: config.keycloak.client_id, clientSecret: config.keycloak.client_secret }, log.child({ module: 'oidc' }))
  const sessionLog = log.child({ module: 'session' })
  const store = deps.sessionStore ?? openSessionStore(config, { db: deps.db, ring, clock, log: log.child({ module: 'store' }) })
  const sessions = new SessionService({ config, store, pool, oidc, clock, log: sessionLog, metrics, claims })
  const users = new UsersRepository(deps.db)
  const audit = new AuditLogRepository(deps.db)
  const sync = createSync(config, { db: deps.db, ring, keycloak, clock, log: log.child({ module: 'sync' }), metrics, ...(store.syncOrder !== undefined ? { order: store.syncOrder } : {}) })
  const { queue } = sync
  // A queued write goes to Keycloak at once when it is reachable (the worker's next cycle is now).
  const queued = (): void => { if (config.sync.enabled && config.keycloak.kind === 'keycloak') sync.worker.kick() }
  const login = new LoginService({ config, users, attempts: store, audit, pool, oidc, clock, log: log.child({ module: 'login' }), claims, logins: metrics.loginsTotal })
  const passwords = new PasswordChanger({
    config, users, audit, queue, pool, oidc, login, clock, log: sessionLog, queued,
    endOtherSessions: async (session) => (await sessions.endWhere({ username: session.username }, 'password_changed', session.id)).length
  })
  const serviceTokens = new ServiceTokenService({
    db: deps.db,
    clock,
    log: log.child({ module: 'service-tokens' }),
    audit,
    config: config.service_tokens,
    delivery: configuredDelivery(config.service_tokens.auto_rotate, config.base_dir),
    // With Redis, every replica's tokens are one set (issue 16): this file mirrors Redis' copy.
    ...(store instanceof RedisSessionStore ? { shared: new RedisServiceTokenShare(store) } : {})
  })
  const jar = new CookieJar(config.secrets.cookie_keys, config.session.cookie_name)
  metrics.bind({
    cachedTokens: () => sessions.countUsableTokens(),
    sessionsActive: () => sessions.countByMode(),
    storeMode: () => store.health(),
    syncQueue: () => queue.depth(clock.now()),
    serviceTokens: () => serviceTokens.counts(),
    serviceTokenExpiries: () => serviceTokens.expiries(),
    serviceTokenGraces: () => serviceTokens.graces()
  })

  const deciderDeps = deciderDepsFor(config, {
    policy: policies,
    verifier,
    log: log.child({ module: 'decision' }),
    record: metrics.recordDecision,
    ...(config.service_tokens.enabled ? { serviceTokens } : {}),
    sessions: {
      identify: async (cookie, scheme) => {
        const secret = jar.sessionSecret(cookie, cookiesSecure(config.session.cookie_secure, config.server.public_url, scheme))
        return secret === null ? null : (await sessions.identify(secret))?.identity ?? null
      }
    }
  })
  const decide = createDecider(deciderDeps)
  // The headers no client may send the app: stripped by the proxy, removed by Envoy.
  const spoofable = spoofableHeaders(config.headers)

  // Outgoing e-mail (alerts, password reset); null without smtp.host.
  const mailer = createMailer(config.smtp)
  const resets = config.password_reset.enabled
    ? new PasswordResetService({
      config,
      resets: new PasswordResetRepository(deps.db),
      users,
      audit,
      queue,
      queued,
      // Written to work whether endWhere returns the ended ids or a promise of them.
      endSessions: async (username) => (await sessions.endWhere({ username }, 'password_reset')).length,
      outbox: mailerOutbox(mailer === null ? null : (message) => mailer.send(message), log.child({ module: 'password_reset' }), metrics.passwordResets),
      clock,
      log: log.child({ module: 'password_reset' }),
      metrics: metrics.passwordResets
    })
    : undefined
  const operations = new Operations({ config, db: deps.db, clock, log, metrics, pool, mode: tracker, queue, audit, mailer, status: () => status(), alerting: deps.worker?.leader !== false,
    ...(config.service_tokens.enabled ? { serviceTokens: { names: () => serviceTokens.repository.list().map((r) => r.name), serviceTokenAlerts: (now: number) => serviceTokens.serviceTokenAlerts(now) } } : {}) })
  metrics.bind({ alertsFiring: () => operations.firingByAlert() })

  let closing = false
  const status = (): Promise<StatusReport> => statusReport({
    config,
    clock,
    startedAt,
    keycloak,
    mode: tracker.mode,
    verifier,
    databasePath: databaseFile(config),
    schemaVersion: () => schemaVersion(deps.db),
    sessions: async () => ({ active: await sessions.countByMode(), cachedTokens: await sessions.countUsableTokens() }),
    store: () => store.health(),
    sync: () => queue.stats(clock.now()),
    clientAuth: () => oidc.clientAuth,
    worker: deps.worker?.slot ?? null,
    serviceTokens: () => serviceTokens.status(),
    policy: () => policies.status(),
    operations: () => operations.report()
  })

  const accessLog = config.log.access_log ? (deps.accessLog === undefined ? accessLogVia(log) : deps.accessLog) : null
  // Every HTTP entry point under the prefix, in one place; each only translates to and from
  // decide(). (The proxy itself is the catch-all; gRPC has a listener of its own, below.)
  const routes = async (fastify: FastifyInstance): Promise<void> => {
    await sessionRoutes(fastify, { config, sessions, login, passwords, oidc, pool, jwks, jar, ring, audit, queue, queued, identify: createIdentifier(deciderDeps), clock, log: sessionLog, ...(resets !== undefined ? { resets } : {}) })
    await fastify.register(forwardAuthRoutes, { config, decide })
    await fastify.register(extAuthzHttpRoutes, { config, decide, spoofable })
  }
  const proxy = createProxyServer({ config, decide, spoofable, log: log.child({ module: 'proxy' }), metrics, accessLog, routes })
  const admin = Fastify({ loggerInstance: log.child({ module: 'admin' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
  admin.setErrorHandler(genericErrorHandler)
  void admin.register(adminPlugin, {
    metrics,
    db: deps.db,
    clock,
    status,
    closing: () => closing,
    refreshSeconds: config.admin.dashboard_refresh_seconds,
    resetBreakers: () => { const reset = pool.resetBreakers(); tracker.evaluate(); return reset },
    ...(deps.metricsSource !== undefined ? { metricsText: deps.metricsSource(metrics.registry) } : {})
  })
  const listeners: Listener[] = [
    fastifyListener('proxy', proxy, config.server),
    fastifyListener('admin', admin, config.admin)
  ]
  if (config.grpc.enabled) {
    const grpcDeps = { config, decide, spoofable, log: log.child({ module: 'grpc' }), accessLog }
    listeners.push(lazyListener('grpc', async () => (await import('./extauthz/grpc.ts')).extAuthzGrpcListener(grpcDeps)))
  }

  return {
    config,
    proxy,
    admin,
    listeners,
    decide,
    keycloak,
    verifier,
    mode: tracker,
    metrics,
    get policy () { return policies.current },
    policies,
    sessions,
    serviceTokens,
    login,
    sync,
    oidc,
    operations,
    status,
    start: () => {
      const keys = jwks.start()
      sessions.start()
      serviceTokens.start({ rotate: deps.worker?.leader !== false })
      operations.start()
      const shared = store.start()
      if (config.sync.enabled && config.keycloak.kind === 'keycloak' && deps.worker?.leader !== false) sync.worker.start()
      if (config.policies.watch) policies.watch()
      return Promise.all([keys, keycloak.health.start(), shared]).then(() => tracker.settle())
    },
    close: async () => {
      closing = true
      policies.close()
      jwks.stop()
      keycloak.health.stop()
      await Promise.allSettled(listeners.map(async (listener) => { await listener.close() }))
      await Promise.all([sessions.stop(), sync.worker.stop(), operations.stop(), serviceTokens.stop()])
      mailer?.close()
      await store.close()
    }
  }
}

/** How claims become identities under `config`: `claims.*`, and the client ids whose client roles count. */
export function claimsReader (config: Config): ClaimsReader {
  return { mapping: config.claims, clientIds: [config.keycloak.client_id, ...config.keycloak.audiences] }
}

/** The bearer-token verifier `serve` uses, over `jwks`; `policy check --token` uses the same one. */
export function tokenVerifier (config: Config, jwks: JwksManager, clock: Clock, metrics: HotPathMetrics): AccessTokenVerifier {
  const reader = claimsReader(config)
  return new AccessTokenVerifier({
    jwks,
    issuer: config.keycloak.issuer,
    clientIds: claimsReader(config).clientIds,
    audiences: config.tokens.audiences,
    algorithms: config.tokens.algorithms,
    clockSkewSeconds: config.tokens.clock_skew_seconds,
    cacheMaxEntries: config.tokens.cache_max_entries,
    clock,
    metrics,
    identityOf: (claims, token) => identityFromClaims(claims, reader, token)
  })
}

/**
 * The decision function's dependencies under `config`, given where policies, tokens and
 * sessions come from: what {@link buildApp} passes to `createDecider`, and what `policy check`
 * passes with a synthetic identity source, so both decide with the very same function.
 */
export function deciderDepsFor (config: Config, parts: { policy: PolicySource, verifier: AccessTokenVerifier, log: Logger, sessions?: SessionLookup, serviceTokens?: ServiceTokenLookup, record?: DeciderDeps['record'] }): DeciderDeps {
  return {
    policy: parts.policy,
    verifier: parts.verifier,
    headers: config.headers,
    claims: claimsReader(config),
    prefix: config.server.prefix,
    log: parts.log,
    ...(parts.record !== undefined ? { record: parts.record } : {}),
    ...(parts.sessions !== undefined ? { sessions: parts.sessions } : {}),
    // Lost once in a merge (the spread hid it from the compiler): service tokens were then
    // refused everywhere as unknown bearer tokens.
    ...(parts.serviceTokens !== undefined ? { serviceTokens: parts.serviceTokens } : {})
  }
}
