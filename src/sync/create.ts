import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { AdminApi } from '../keycloak/admin.ts'
import type { KeycloakClient } from '../keycloak/client.ts'
import { OidcClient } from '../keycloak/oidc.ts'
import type { KeyRing } from '../store/crypto.ts'
import type { Db } from '../store/db.ts'
import { SyncQueueRepository } from '../store/sync-queue.ts'
import { UsersRepository } from '../store/users.ts'
import { SyncWorker, type SyncMetrics, type SyncWorkerDeps } from './worker.ts'

/** The sync queue's parts, as serve and the CLI's `sync` commands both build them. */
export interface SyncParts {
  queue: SyncQueueRepository
  api: AdminApi
  worker: SyncWorker
}

/**
 * An OIDC client for the configured Keycloak under given credentials: browser URLs under the
 * public issuer, every request through the pool.
 */
export function oidcClientFor (config: Config, keycloak: KeycloakClient, clock: Clock, credentials: { clientId: string, clientSecret: string | undefined }, log?: Logger): OidcClient {
  const kc = config.keycloak
  return new OidcClient({
    pool: keycloak.pool,
    jwks: keycloak.jwks,
    metadata: keycloak.metadata,
    issuer: kc.issuer,
    clientId: credentials.clientId,
    // The app's client authenticates as configured; another client (the Admin API's service
    // account) by its secret, the Keycloak way.
    auth: credentials.clientId === kc.client_id
      ? { method: kc.client_auth_method, secret: credentials.clientSecret, privateKey: kc.client_private_key, keyId: kc.client_key_id }
      : { method: 'client_secret_basic', secret: credentials.clientSecret },
    clock,
    clockSkewSeconds: config.tokens.clock_skew_seconds,
    userinfo: credentials.clientId === kc.client_id && config.claims.userinfo,
    ...(log !== undefined ? { log } : {})
  })
}

/** Builds the queue, the Admin API client (service account of `keycloak.admin`) and the worker. */
export function createSync (config: Config, deps: { db: Db, ring: KeyRing, keycloak: KeycloakClient, clock: Clock, log: Logger, metrics: SyncMetrics, onSettled?: SyncWorkerDeps['onSettled'], order?: SyncWorkerDeps['order'] }): SyncParts {
  const kc = config.keycloak
  const adminOidc = oidcClientFor(config, deps.keycloak, deps.clock, { clientId: kc.admin.client_id ?? kc.client_id, clientSecret: kc.admin.client_secret ?? kc.client_secret }, deps.log)
  const api = new AdminApi({ pool: deps.keycloak.pool, oidc: adminOidc, realm: kc.realm, clock: deps.clock, timeoutMs: kc.timeout_ms })
  const queue = new SyncQueueRepository(deps.db, deps.ring)
  const worker = new SyncWorker({
    config,
    queue,
    users: new UsersRepository(deps.db),
    api,
    pool: deps.keycloak.pool,
    clock: deps.clock,
    log: deps.log,
    metrics: deps.metrics,
    ...(deps.onSettled !== undefined ? { onSettled: deps.onSettled } : {}),
    ...(deps.order !== undefined ? { order: deps.order } : {})
  })
  return { queue, api, worker }
}
