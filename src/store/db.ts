import { randomBytes } from 'node:crypto'
import { accessSync, constants, mkdirSync, rmdirSync, statSync, unlinkSync, writeFileSync, type Stats } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
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
  const file = options.path
  try {
    if (file !== ':memory:') createDirectory(dirname(file))
    db = new Database(file, { timeout: options.busyTimeoutMs ?? 5000 })
  } catch (err) {
    throw openError(file, err)
  }
  try {
    db.pragma('journal_mode = WAL')
    // NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the last commits.
    db.pragma('synchronous = NORMAL')
    db.pragma('foreign_keys = ON')
  } catch (err) {
    db.close()
    // A file that opened but cannot be written (read-only mount, a foreign owner) fails here.
    throw openError(file, err)
  }
  try {
    const migration = options.migrate === false ? { from: schemaVersion(db), to: schemaVersion(db), applied: [] } : migrate(db)
    return { db, migration }
  } catch (err) {
    db.close()
    throw err
  }
}

/**
 * Creates `dir` and its missing parents one level at a time, so each failure is the real one.
 * Not `mkdirSync(dir, { recursive: true })`: Node's native loop retries for ever when mkdir
 * answers ENOENT under a parent that exists, as procfs does (`/proc/gatehouse`), spinning at
 * 100% CPU inside one synchronous call where no signal handler can run; and it turns EROFS or
 * EACCES into ENOENT (nodejs/node#42808).
 */
function createDirectory (dir: string): void {
  const missing: string[] = []
  let existing = dir
  while (lookup(existing) === undefined) {
    missing.unshift(existing)
    const parent = dirname(existing)
    if (parent === existing) break
    existing = parent
  }
  if (lookup(existing)?.isDirectory() === false) {
    throw new DirectoryError(missing[0] ?? dir, `${existing} is not a directory`)
  }
  for (const level of missing) {
    try {
      mkdirSync(level)
    } catch (err) {
      // Another process made it meanwhile.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && lookup(level)?.isDirectory() === true) continue
      throw new DirectoryError(level, reasonOf(err, dirname(level)))
    }
  }
}

/** `stat`, or undefined when nothing is there: ENOENT, or ENOTDIR when a parent is a file. */
function lookup (path: string): Stats | undefined {
  try {
    return statSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined
    throw err
  }
}

class DirectoryError extends Error {
  constructor (directory: string, reason: string) {
    super(`cannot create the directory ${directory}: ${reason}`)
  }
}

/** One line a person can act on: which file, what failed, and why. */
function openError (file: string, err: unknown): StoreError {
  if (err instanceof DirectoryError) {
    return new StoreError('ERR_DB_OPEN', `cannot open database ${file}: ${err.message}`, { cause: err })
  }
  // SQLite says only "unable to open database file" (SQLITE_CANTOPEN); find out why.
  const why = file === ':memory:' ? null : locationProblem(file)
  return new StoreError('ERR_DB_OPEN', `cannot open database ${file}: ${(err as Error).message}${why === null ? '' : ` (${why})`}`, { cause: err })
}

function reasonOf (err: unknown, parent: string): string {
  const code = (err as NodeJS.ErrnoException).code
  switch (code) {
    case 'ENOENT': return `ENOENT although ${parent} exists: its file system (procfs, sysfs or similar) does not accept new entries`
    case 'EROFS': return 'read-only file system (EROFS)'
    case 'EACCES':
    case 'EPERM': return `permission denied${typeof process.getuid === 'function' ? ` for uid ${process.getuid()}` : ''} (${code})`
    case 'ENOSPC': return 'no space left on device (ENOSPC)'
    case 'ENOTDIR': return `a part of ${parent} is not a directory (ENOTDIR)`
    default: return (err as Error).message
  }
}

/**
 * Why a database file could not be created or written at `file`, or null when nothing stands
 * in the way: the file must be readable and writable if it exists, and its directory (where
 * SQLite also writes the `-wal` and `-shm` files) must exist or be creatable, and accept new
 * files. Tried for real, with a probe entry removed at once: `access(W_OK)` says yes to root
 * under /proc. Used by `config validate` (a warning) and to explain a failed open.
 */
export function locationProblem (file: string): string | null {
  const dir = dirname(file)
  let existing = dir
  while (lookup(existing) === undefined) {
    const parent = dirname(existing)
    if (parent === existing) break
    existing = parent
  }
  const stat = lookup(existing)
  if (stat?.isDirectory() !== true) return `the directory ${dir} cannot be created: ${existing} is not a directory`
  const probe = join(existing, `.gatehouse-write-check-${randomBytes(6).toString('hex')}`)
  if (existing !== dir) {
    try {
      mkdirSync(probe)
      rmdirSync(probe)
      return null
    } catch (err) {
      return `the directory ${dir} does not exist and cannot be created: ${reasonOf(err, existing)}`
    }
  }
  const fileStat = lookup(file)
  if (fileStat !== undefined) {
    if (!fileStat.isFile()) return `${file} is not a regular file`
    try {
      accessSync(file, constants.R_OK | constants.W_OK)
    } catch (err) {
      return `${file} is not writable: ${reasonOf(err, dir)}`
    }
  }
  try {
    writeFileSync(probe, '', { flag: 'wx' })
    unlinkSync(probe)
    return null
  } catch (err) {
    return `the directory ${dir} does not accept new files: ${reasonOf(err, dir)}`
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
