import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import Database from 'better-sqlite3'
import type { Config } from '../config/schema.ts'
import { StoreError } from '../errors.ts'
import { migrate, type MigrationResult } from './migrate.ts'

/** A better-sqlite3 connection. */
export type Db = Database.Database

/** Options for {@link openDatabase}. */
export interface OpenOptions {
  /** File path, or `:memory:`. */
  path: string
  /** How long a statement waits for another connection's lock, in milliseconds. Default is 5000. */
  busyTimeoutMs?: number
  /** Apply pending migrations. Default is true. */
  migrate?: boolean
}

/** The configured database file, relative paths resolved against the config file's directory; or `:memory:`. */
export function databaseFile (config: Pick<Config, 'database' | 'base_dir'>): string {
  return config.database.path === ':memory:' ? ':memory:' : resolve(config.base_dir, config.database.path)
}

/** Opens the configured store (see {@link openDatabase}): what serve and every CLI command use. */
export function openConfiguredDatabase (config: Pick<Config, 'database' | 'base_dir'>): OpenedDatabase {
  return openDatabase({ path: databaseFile(config), busyTimeoutMs: config.database.busy_timeout_ms })
}

/** An open store and what its migrations did. */
export interface OpenedDatabase {
  db: Db
  migration: MigrationResult
}

/**
 * Opens the SQLite store in WAL mode (readers never block the writer), with a busy timeout
 * and foreign keys on, and brings its schema up to date. A database written by a newer
 * Gatehouse is refused (`ERR_DB_NEWER_SCHEMA`) rather than half-understood.
 */
export function openDatabase (options: OpenOptions): OpenedDatabase {
  let db: Db
  try {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true })
    db = new Database(options.path, { timeout: options.busyTimeoutMs ?? 5000 })
  } catch (err) {
    throw new StoreError('ERR_DB_OPEN', `cannot open database ${options.path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    db.pragma('journal_mode = WAL')
    // NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the last commits.
    db.pragma('synchronous = NORMAL')
    db.pragma('foreign_keys = ON')
    const migration = options.migrate === false ? { from: schemaVersion(db), to: schemaVersion(db), applied: [] } : migrate(db)
    return { db, migration }
  } catch (err) {
    db.close()
    throw err
  }
}

/** The schema version recorded in the file (`PRAGMA user_version`). */
export function schemaVersion (db: Db): number {
  return db.pragma('user_version', { simple: true }) as number
}

/**
 * Proves the database accepts writes, for `/readyz`: a one-row upsert in `meta`.
 * Returns the error instead of throwing, so a probe never crashes.
 */
export function probeWritable (db: Db, now: number): Error | null {
  try {
    db.prepare('INSERT INTO meta (key, value, updated_at) VALUES (\'ready_probe\', ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at')
      .run(String(now), now)
    return null
  } catch (err) {
    return err as Error
  }
}
