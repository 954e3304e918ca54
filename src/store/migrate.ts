import { readdirSync, readFileSync } from 'node:fs'
import { StoreError } from '../errors.ts'
import type { Db } from './db.ts'

/** One schema change, from `migrations/NNN-name.sql`. */
export interface Migration {
  version: number
  name: string
  sql: string
}

/** What {@link migrate} did. */
export interface MigrationResult {
  /** Version found in the file. */
  from: number
  /** Version the file has now. */
  to: number
  /** Names of the migrations applied now, in order. */
  applied: string[]
}

const MIGRATIONS_DIR = new URL('./migrations/', import.meta.url)

/** The migrations shipped with this build, in version order. */
export function loadMigrations (dir: URL = MIGRATIONS_DIR): Migration[] {
  const migrations = readdirSync(dir)
    .map((file) => /^(\d{3})-([a-z0-9-]+)\.sql$/.exec(file))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ version: Number(m[1]), name: `${m[1]}-${m[2]}`, sql: readFileSync(new URL(m[0], dir), 'utf8') }))
    .sort((a, b) => a.version - b.version)
  // Versions must increase but may skip numbers: branches developed side by side reserve
  // numbers of their own (003, 004, 005), and a build may ship a later one before an earlier.
  migrations.forEach((m, i) => {
    const before = migrations[i - 1]
    if (m.version < 1 || (before !== undefined && m.version === before.version)) {
      throw new StoreError('ERR_DB_MIGRATION', `migration ${m.name} is out of sequence: its version is ${before === undefined ? 'below 1' : `that of ${before.name}`}`)
    }
  })
  return migrations
}

/**
 * Applies every migration newer than the file's `user_version`, each in its own transaction
 * with the version bump, so a crash leaves the file at a whole version. Running it again
 * applies nothing.
 */
export function migrate (db: Db, migrations: Migration[] = loadMigrations()): MigrationResult {
  const from = db.pragma('user_version', { simple: true }) as number
  const latest = migrations.at(-1)?.version ?? 0
  if (from > latest) {
    throw new StoreError('ERR_DB_NEWER_SCHEMA',
      `database schema version ${from} is newer than this Gatehouse understands (${latest}); run the newer Gatehouse or restore a backup taken before the upgrade`)
  }
  const applied: string[] = []
  for (const migration of migrations) {
    if (migration.version <= from) continue
    // Re-read the version inside the write lock: another process may have applied this step.
    const apply = db.transaction((): boolean => {
      if ((db.pragma('user_version', { simple: true }) as number) >= migration.version) return false
      db.exec(migration.sql)
      db.pragma(`user_version = ${migration.version}`)
      return true
    })
    let ran: boolean
    try {
      // BEGIN IMMEDIATE takes the write lock before reading, so two starts cannot interleave.
      ran = apply.immediate()
    } catch (err) {
      throw new StoreError('ERR_DB_MIGRATION', `migration ${migration.name} failed: ${(err as Error).message}`, { cause: err })
    }
    if (!ran) continue
    applied.push(migration.name)
  }
  return { from, to: Math.max(from, latest), applied }
}
