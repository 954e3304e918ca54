import { existsSync } from 'node:fs'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { createKeycloakClient, type KeycloakClient } from '../keycloak/client.ts'
import type { OidcClient } from '../keycloak/oidc.ts'
import { createLogger } from '../log.ts'
import { createMetrics } from '../metrics/registry.ts'
import { KeyRing } from '../store/crypto.ts'
import { databaseFile, openDatabase, schemaVersion, type Db } from '../store/db.ts'
import { loadMigrations } from '../store/migrate.ts'
import { createSync, oidcClientFor, type SyncParts } from '../sync/create.ts'

/** What the database file is, before anything is changed. */
export interface DatabaseState {
  /** The configured file, or null for `:memory:`. */
  file: string | null
  exists: boolean
  /** Its schema version (0 when it does not exist). */
  version: number
  /** The version this Gatehouse writes. */
  latest: number
  /** Migrations this Gatehouse would apply to it. */
  pending: string[]
  /** Why it could not be opened, or null. */
  error: string | null
}

/**
 * The parts every doctor command works with, built by the same code `serve` uses: the
 * Keycloak client (pool, breakers, metadata, JWKS), the app's OIDC client, the sync queue and
 * its Admin API client. The database is the configured file when it exists and is current,
 * else a throw-away copy in memory, so that diagnosing never migrates or creates a file.
 */
export interface DoctorContext {
  config: Config
  clock: Clock
  log: Logger
  database: DatabaseState
  /** The configured database when current, else a migrated in-memory one. */
  db: Db
  /** Whether {@link db} is the configured file. */
  onFile: boolean
  keycloak: KeycloakClient
  oidc: OidcClient
  ring: KeyRing
  /** The sync queue and Admin API (Keycloak only). */
  sync: SyncParts | null
  close: () => void
}

/** Reads the database file's state without opening it for writing or migrating it. */
export function databaseState (config: Config): DatabaseState {
  const file = config.database.path === ':memory:' ? null : databaseFile(config)
  const migrations = loadMigrations()
  const latest = migrations.at(-1)?.version ?? 0
  const exists = file !== null && existsSync(file)
  let version = 0
  let error: string | null = null
  if (exists) {
    try {
      const { db } = openDatabase({ path: file, busyTimeoutMs: config.database.busy_timeout_ms, migrate: false })
      try {
        version = schemaVersion(db)
      } finally {
        db.close()
      }
    } catch (err) {
      error = (err as Error).message
    }
  }
  return { file, exists, version, latest, pending: migrations.filter((m) => m.version > version).map((m) => m.name), error }
}

/** Opens what doctor commands need (see {@link DoctorContext}). */
export function openDoctor (config: Config, options: { clock: Clock, log?: Logger }): DoctorContext {
  const log = options.log ?? createLogger({ level: 'silent' })
  const { clock } = options
  const database = databaseState(config)
  const onFile = database.exists && database.error === null && database.version === database.latest && database.file !== null
  const { db } = onFile
    ? openDatabase({ path: database.file as string, busyTimeoutMs: config.database.busy_timeout_ms, migrate: false })
    : openDatabase({ path: ':memory:' })
  const metrics = createMetrics()
  const keycloak = createKeycloakClient(config, { db, clock, log, metrics })
  keycloak.jwks.load()
  const ring = new KeyRing(config.secrets.encryption_keys)
  const oidc = oidcClientFor(config, keycloak, clock, { clientId: config.keycloak.client_id, clientSecret: config.keycloak.client_secret }, log.child({ module: 'oidc' }))
  const sync = config.keycloak.kind === 'keycloak' ? createSync(config, { db, ring, keycloak, clock, log: log.child({ module: 'sync' }), metrics }) : null
  return { config, clock, log, database, db, onFile, keycloak, oidc, ring, sync, close: () => { keycloak.health.stop(); keycloak.jwks.stop(); db.close() } }
}
