import { createInterface } from 'node:readline'
import { Writable, type Readable } from 'node:stream'
import { systemClock, type Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { NotKeycloakError, UsageError } from '../errors.ts'
import { hashPassword, passwordProblem, verifyPassword } from '../session/passwords.ts'
import { AuditLogRepository } from '../store/audit-log.ts'
import { openConfiguredDatabase, type Db } from '../store/db.ts'
import { UsersRepository, type UserRecord } from '../store/users.ts'
import { loadForServe } from './config-command.ts'
import { migrateToKeycloak } from '../sync/migrate.ts'
import { openSync } from './sync-command.ts'
import { emit, formatTable, type Output } from './output.ts'
import { withSessionService } from './session-access.ts'

/** Longest user name `users add` accepts, in characters. */
export const MAX_USERNAME_LENGTH = 128

/** Where a password comes from: standard input, and where prompts go when it is a terminal. */
export interface PasswordSource {
  /** Read as one line when it is not a TTY; prompted on, echo off, when it is. */
  stdin: Readable & { isTTY?: boolean }
  /** Where prompts are written (standard error, so standard output stays clean). */
  prompts: Writable
}

/** Options of {@link runUsersCommand}. */
export interface UsersCommandOptions extends PasswordSource {
  configPath: string
  env?: NodeJS.ProcessEnv
  json: boolean
  /** `--email`, for `users add`. */
  email?: string
  /** `--role`, repeatable, for `users add` (and the selection of `migrate-to-keycloak`). */
  roles?: string[]
  /** `--group`, repeatable, for `users add`. */
  groups?: string[]
  /** Default is the system clock. */
  clock?: Clock
  /** `--dry-run`, for `migrate-to-keycloak`. */
  dryRun?: boolean
  /** `--batch-size`, for `migrate-to-keycloak`. */
  batchSize?: string
  /** Draw a progress bar (standard error is a terminal). */
  progressTty?: boolean
}

/** A user as `users list --json` prints it: never the hash, only whether there is one. */
export interface UserView {
  username: string
  email: string | null
  first_name: string | null
  last_name: string | null
  roles: string[]
  groups: string[]
  enabled: boolean
  source: UserRecord['source']
  keycloak_id: string | null
  has_password: boolean
  password_changed_at: string | null
  credential_expires_at: string | null
  created_at: string
  updated_at: string
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

/** The public view of a user row (the password hash stays behind). */
export function userView (user: UserRecord): UserView {
  return {
    username: user.username,
    email: user.email,
    first_name: user.firstName,
    last_name: user.lastName,
    roles: user.roles,
    groups: user.groups,
    enabled: user.enabled,
    source: user.source,
    keycloak_id: user.keycloakId,
    has_password: user.passwordHash !== null,
    password_changed_at: iso(user.passwordChangedAt),
    credential_expires_at: iso(user.credentialExpiresAt),
    created_at: new Date(user.createdAt).toISOString(),
    updated_at: new Date(user.updatedAt).toISOString()
  }
}

/**
 * A user name as given on the command line, trimmed; a name that is empty, longer than
 * {@link MAX_USERNAME_LENGTH} characters or holds a control character is a usage error.
 */
export function normaliseUsername (raw: string | undefined): string {
  const name = (raw ?? '').trim()
  if (name.length === 0) throw new UsageError('a user name is required')
  if ([...name].length > MAX_USERNAME_LENGTH) throw new UsageError(`user names are at most ${MAX_USERNAME_LENGTH} characters`)
  if (/\p{Cc}/u.test(name)) throw new UsageError('user names may not contain control characters')
  return name
}

/**
 * `gatehouse users add|passwd|disable|enable|list`. The password is never an argument (it
 * would sit in the shell history and in `ps`): it is read from standard input, or prompted
 * for twice with echo off when standard input is a terminal.
 */
export async function runUsersCommand (sub: string | undefined, args: string[], options: UsersCommandOptions, output: Output): Promise<number> {
  // Which options each subcommand takes is checked by run.ts against usage.ts.
  switch (sub) {
    case 'add':
    case 'passwd':
    case 'disable':
    case 'enable': {
      if (args.length !== 1) throw new UsageError(`usage: gatehouse users ${sub} USER`)
      const username = normaliseUsername(args[0])
      const email = sub === 'add' ? normaliseEmail(options.email) : null
      const roles = names(options.roles, '--role')
      const groups = names(options.groups, '--group')
      return await withStore(options, async (store) => {
        if (sub === 'add') return await addUser(store, { username, email, roles, groups }, options, output)
        if (sub === 'passwd') return await changePassword(store, username, options, output)
        return await setEnabled(store, username, sub === 'enable', options, output)
      })
    }
    case 'list': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse users list [--json]')
      return await withStore(options, (store) => {
        const users = store.users.list().map(userView)
        emit(output, options.json, users, () => users.length === 0 ? 'no users' : formatUsers(users))
        return 0
      })
    }
    case 'migrate-to-keycloak': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse users migrate-to-keycloak [--dry-run] [--role R]... [--batch-size N]')
      if (options.batchSize !== undefined && !/^[1-9]\d{0,3}$/.test(options.batchSize)) throw new UsageError(`--batch-size expects a whole number from 1 to 9999, received ${JSON.stringify(options.batchSize)}`)
      return await migrate(options, output)
    }
    default:
      throw new UsageError(`unknown users subcommand ${JSON.stringify(sub ?? '')}: use add, passwd, disable, enable, list or migrate-to-keycloak`)
  }
}

interface Store {
  config: Config
  db: Db
  users: UsersRepository
  audit: AuditLogRepository
  clock: Clock
}

async function withStore (options: UsersCommandOptions, fn: (store: Store) => number | Promise<number>): Promise<number> {
  const { config } = loadForServe(options.configPath, options.env)
  const { db } = openConfiguredDatabase(config)
  try {
    return await fn({ config, db, users: new UsersRepository(db), audit: new AuditLogRepository(db), clock: options.clock ?? systemClock })
  } finally {
    db.close()
  }
}

function fail (output: Output, message: string): number {
  output.err(`gatehouse: ${message}`)
  return 1
}

async function addUser (store: Store, user: { username: string, email: string | null, roles: string[], groups: string[] }, options: UsersCommandOptions, output: Output): Promise<number> {
  // Checked before asking for a password, so nobody types one for nothing.
  const existing = store.users.find(user.username)
  if (existing !== null) return fail(output, alreadyExists(existing))
  const password = await readNewPassword(options, user.username)
  if (password.problem !== null) return fail(output, password.problem)
  const problem = passwordProblem(password.value, user.username, store.config.local_auth.password_policy)
  if (problem !== null) return fail(output, `password refused: ${problem}`)
  const passwordHash = await hashPassword(password.value)
  const now = store.clock.now()
  let created: UserRecord
  try {
    created = store.db.transaction(() => {
      const row = store.users.create({ username: user.username, email: user.email, passwordHash, roles: user.roles, groups: user.groups }, now)
      store.audit.append({ actor: row.username, action: 'user_added', result: 'success', detail: { via: 'cli' } }, now)
      return row
    })()
  } catch (err) {
    // Another process added the same name while the password was being typed.
    if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
      const raced = store.users.find(user.username)
      return fail(output, raced === null ? `user ${JSON.stringify(user.username)} already exists` : alreadyExists(raced))
    }
    throw err
  }
  emit(output, options.json, userView(created), () => `added user ${created.username}${created.roles.length > 0 ? ` (roles: ${created.roles.join(', ')})` : ''}`)
  return 0
}

function alreadyExists (user: UserRecord): string {
  return user.source === 'keycloak'
    ? `user ${JSON.stringify(user.username)} already exists (a Keycloak user's cached credential)`
    : `user ${JSON.stringify(user.username)} already exists`
}

async function changePassword (store: Store, username: string, options: UsersCommandOptions, output: Output): Promise<number> {
  const user = store.users.find(username)
  if (user === null) return fail(output, `no such user ${JSON.stringify(username)}`)
  // A cached credential is a copy of what Keycloak accepted; the next Keycloak login overwrites it.
  if (user.source === 'keycloak') return fail(output, `${JSON.stringify(user.username)} is a Keycloak user (cached credential): change the password in Keycloak`)
  const password = await readNewPassword(options, user.username)
  if (password.problem !== null) return fail(output, password.problem)
  const policy = store.config.local_auth.password_policy
  const problem = passwordProblem(password.value, user.username, policy) ??
    (policy.not_current && user.passwordHash !== null && await verifyPassword(password.value, user.passwordHash) ? 'The new password must differ from the current one.' : null)
  if (problem !== null) return fail(output, `password refused: ${problem}`)
  const passwordHash = await hashPassword(password.value)
  const now = store.clock.now()
  store.db.transaction(() => {
    store.users.setPassword(user.username, passwordHash, now)
    store.audit.append({ actor: user.username, action: 'password_change', result: 'success', detail: { via: 'cli' } }, now)
  })()
  // Live sessions are kept on purpose; `sessions logout-user` ends them.
  emit(output, options.json, { username: user.username, password_changed_at: new Date(now).toISOString() }, () => `changed the password of ${user.username}`)
  return 0
}

async function setEnabled (store: Store, username: string, enabled: boolean, options: UsersCommandOptions, output: Output): Promise<number> {
  const user = store.users.find(username)
  if (user === null) return fail(output, `no such user ${JSON.stringify(username)}`)
  const now = store.clock.now()
  store.db.transaction(() => {
    store.users.setEnabled(user.username, enabled, now)
    store.audit.append({ actor: user.username, action: enabled ? 'user_enabled' : 'user_disabled', result: 'success', detail: { via: 'cli' } }, now)
  })()
  // A disabled user is out now, not when their sessions expire: through the session service,
  // so every running sidecar (every replica, with Redis) drops them at once.
  const ended = enabled ? [] : await withSessionService(store.config, store.db, store.clock, async (sessions) => await sessions.endWhere({ username: user.username }, 'user_disabled'))
  emit(output, options.json, { username: user.username, enabled, sessions_ended: ended.length }, () => {
    const done = `${enabled ? 'enabled' : 'disabled'} user ${user.username}`
    return ended.length > 0 ? `${done}; ended ${ended.length} live session${ended.length === 1 ? '' : 's'}` : done
  })
  return 0
}

function normaliseEmail (raw: string | undefined): string | null {
  if (raw === undefined) return null
  const email = raw.trim()
  if (!/^[^\s@]+@[^\s@]+$/.test(email)) throw new UsageError(`--email ${JSON.stringify(raw)} is not an email address`)
  return email
}

function names (raw: string[] | undefined, option: string): string[] {
  const out: string[] = []
  for (const value of raw ?? []) {
    const name = value.trim()
    if (name.length === 0 || /\p{Cc}/u.test(name)) throw new UsageError(`${option} ${JSON.stringify(value)} is not a valid name`)
    if (!out.includes(name)) out.push(name)
  }
  return out
}

type NewPassword = { value: string, problem: null } | { value: null, problem: string }

/** Reads a new password from standard input (first line) or, on a terminal, prompts twice. */
async function readNewPassword (source: PasswordSource, username: string): Promise<NewPassword> {
  if (source.stdin.isTTY !== true) {
    const line = await readFirstLine(source.stdin)
    return line === null || line.length === 0 ? { value: null, problem: 'no password given on standard input (it reads the first line)' } : { value: line, problem: null }
  }
  const answers = await promptHidden(source, [`New password for ${username}: `, 'Repeat the password: '])
  if (answers === null) return { value: null, problem: 'cancelled' }
  const [first, second] = answers
  if (first === undefined || first.length === 0) return { value: null, problem: 'an empty password is not accepted' }
  if (first !== second) return { value: null, problem: 'the passwords did not match' }
  return { value: first, problem: null }
}

/** The first line of a stream without its line ending, or null when the stream ends empty. */
export function readFirstLine (input: Readable): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input, terminal: false, crlfDelay: Infinity })
    let line: string | null = null
    rl.once('line', (text) => { line = text; rl.close() })
    rl.once('close', () => resolve(line))
    input.once('error', reject)
  })
}

/**
 * Asks each question on the terminal with echo off: readline handles the line editing, its
 * output goes nowhere, and the prompts are written beside it. Lines that arrive together (a
 * paste) are queued, not lost. Resolves to null on Ctrl-C or Ctrl-D.
 */
async function promptHidden (source: PasswordSource, questions: string[]): Promise<string[] | null> {
  const silent = new Writable({ write (_chunk, _encoding, done) { done() } })
  // historySize 0: no password stays in readline's history.
  const rl = createInterface({ input: source.stdin, output: silent, terminal: true, historySize: 0 })
  const queued: string[] = []
  let waiting: ((line: string | null) => void) | null = null
  const deliver = (line: string | null): void => {
    if (waiting !== null) { const w = waiting; waiting = null; w(line) } else if (line !== null) queued.push(line)
  }
  let cancelled = false
  rl.on('line', (line) => deliver(line))
  rl.on('SIGINT', () => { cancelled = true; deliver(null) })
  rl.on('close', () => { cancelled = true; deliver(null) })
  try {
    const answers: string[] = []
    for (const question of questions) {
      source.prompts.write(question)
      const line = queued.shift() ?? (cancelled ? null : await new Promise<string | null>((resolve) => { waiting = resolve }))
      source.prompts.write('\n')
      if (line === null) return null
      answers.push(line)
    }
    return answers
  } finally {
    rl.close()
  }
}

function formatUsers (users: UserView[]): string {
  return formatTable(users, [
    { header: 'user', value: (u) => u.username },
    { header: 'source', value: (u) => u.source },
    { header: 'enabled', value: (u) => (u.enabled ? 'yes' : 'no') },
    { header: 'email', value: (u) => u.email },
    { header: 'roles', value: (u) => (u.roles.length === 0 ? null : u.roles.join(',')) },
    { header: 'groups', value: (u) => (u.groups.length === 0 ? null : u.groups.join(',')) },
    { header: 'password', value: (u) => (u.has_password ? 'set' : 'none') },
    { header: 'password changed', value: (u) => u.password_changed_at },
    { header: 'created', value: (u) => u.created_at }
  ])
}

/**
 * `users migrate-to-keycloak`: a progress bar on a terminal, a line per user otherwise, then
 * the summary (created, linked, failed with reasons).
 */
async function migrate (options: UsersCommandOptions, output: Output): Promise<number> {
  const loaded = loadForServe(options.configPath, options.env).config
  if (loaded.keycloak.kind !== 'keycloak') throw new NotKeycloakError('gatehouse users migrate-to-keycloak')
  const config = options.batchSize === undefined ? loaded : { ...loaded, sync: { ...loaded.sync, batch_size: Number(options.batchSize) } }
  const ctx = await openSync(config, { logLevel: 'silent' })
  const tty = options.progressTty === true && !options.json
  try {
    const summary = await migrateToKeycloak(ctx, {
      dryRun: options.dryRun === true,
      roles: names(options.roles, '--role'),
      progress: (settled, total, line) => {
        if (options.json) return
        if (!tty) { output.out(`[${settled}/${total}] ${line}`); return }
        const width = 30
        const filled = total === 0 ? width : Math.round(width * settled / total)
        output.err(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${settled}/${total}`)
      }
    })
    if (tty) output.err('\n')
    emit(output, options.json, summary, () => {
      const counts = Object.entries(summary.counts).map(([k, n]) => `${n} ${k.replaceAll('_', ' ')}`).join(', ')
      const failures = summary.results.filter((r) => r.result === 'failed').map((r) => `  ${r.username}: ${r.reason ?? 'unknown'}`)
      return [`${summary.dryRun ? 'dry run, nothing changed: ' : ''}${summary.selected} local user${summary.selected === 1 ? '' : 's'} selected${counts === '' ? '' : `: ${counts}`}`,
        ...(summary.keycloakReachable ? [] : ['keycloak is unreachable: creations stay queued and replay when it is back']),
        ...(failures.length > 0 ? ['failed:', ...failures] : []),
        ...(!summary.dryRun && (summary.counts.created ?? 0) > 0 ? ['passwords are not copied (Keycloak cannot take scrypt hashes): users set one in Keycloak, or with auth.primary local their next password change is pushed'] : [])
      ].join('\n')
    })
    return (summary.counts.failed ?? 0) > 0 ? 1 : 0
  } finally {
    ctx.close()
  }
}
