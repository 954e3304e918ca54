import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { WorkerRole } from './cluster/worker.ts'
import { buildApp, type App } from './app.ts'
import type { Clock } from './clock.ts'
import type { AccessLog } from './access-log.ts'
import type { Config } from './config/schema.ts'
import type { PolicySet } from './authz/policy.ts'
import { openConfiguredDatabase, type Db } from './store/db.ts'

/** A running Gatehouse: every listener bound, background work started. */
export interface RunningServer {
  app: App
  db: Db
  /** Settles after the first round of Keycloak health checks (start-up never waits for it). */
  started: Promise<void>
  /** Where each listener listens, by name (`proxy`, `admin`, `grpc` when enabled). */
  urls: Readonly<Record<string, string>>
  /** `http://host:port` of the proxy listener. */
  proxyUrl: string
  /** `http://host:port` of the admin listener. */
  adminUrl: string
  /**
   * Graceful stop: readiness fails, listeners stop accepting, in-flight requests get
   * `server.shutdown_timeout_ms` to finish before their connections are cut, SQLite closes.
   */
  stop: () => Promise<void>
}

/** Options of {@link startServer}. */
export interface StartOptions {
  log: Logger
  /** Where access lines go; through `log` when absent, none when null. */
  accessLog?: AccessLog | null
  clock?: Clock
  /** Policies already loaded by the caller; read from `policies.dir` when absent. */
  policy?: PolicySet
  /** Which cluster worker this is; absent in a single process. */
  worker?: WorkerRole
  /** Given the app's registry, what `/metrics` serves (a cluster worker's: every worker's, summed); the registry alone when absent. */
  metricsSource?: (registry: Registry) => () => Promise<string>
}

/**
 * Opens the store, builds the app and binds every listener it has. Start-up never waits on
 * Keycloak: the JWKS comes from SQLite and is refreshed in the background.
 */
export async function startServer (config: Config, options: StartOptions): Promise<RunningServer> {
  const { log } = options
  const { db, migration } = openConfiguredDatabase(config)
  if (migration.applied.length > 0) log.info({ from: migration.from, to: migration.to, applied: migration.applied }, 'database migrated')
  let app: App
  let started: Promise<void>
  const urls: Record<string, string> = {}
  try {
    const { accessLog, clock, policy, worker, metricsSource } = options
    app = buildApp(config, {
      db,
      log,
      ...(accessLog !== undefined ? { accessLog } : {}),
      ...(clock !== undefined ? { clock } : {}),
      ...(policy !== undefined ? { policy } : {}),
      ...(worker !== undefined ? { worker } : {}),
      ...(metricsSource !== undefined ? { metricsSource } : {})
    })
    // start() loads the stored JWKS synchronously, before the first request can arrive; the
    // rest (refreshes, health checks) goes on in the background and is never waited for.
    started = app.start().catch((err: unknown) => { log.error({ err }, 'background start-up failed') })
    try {
      for (const listener of app.listeners) urls[listener.name] = await listener.listen()
    } catch (err) {
      await app.close()
      throw err
    }
  } catch (err) {
    db.close()
    throw err
  }
  log.info({ ...urls, environment: config.environment, upstream: config.upstream.url }, 'gatehouse listening')

  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const force = setTimeout(() => {
        log.warn({ timeout_ms: config.server.shutdown_timeout_ms }, 'shutdown grace period over; closing remaining connections')
        for (const listener of app.listeners) listener.closeConnections()
      }, config.server.shutdown_timeout_ms)
      force.unref()
      await app.close()
      clearTimeout(force)
      db.close()
      log.info('gatehouse stopped')
    })()
    return stopping
  }
  return { app, db, started, urls, proxyUrl: urls.proxy as string, adminUrl: urls.admin as string, stop }
}
