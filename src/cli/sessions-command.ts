import { systemClock, type Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { UsageError } from '../errors.ts'
import { AuditLogRepository } from '../store/audit-log.ts'
import type { SessionService } from '../session/service.ts'
import { KeyRing } from '../store/crypto.ts'
import { openConfiguredDatabase, type Db } from '../store/db.ts'
import type { SessionMode, SessionRecord } from '../store/sessions.ts'
import { SyncQueueRepository } from '../store/sync-queue.ts'
import { UsersRepository } from '../store/users.ts'
import { loadForServe } from './config-command.ts'
import { emit, formatTable, type Output } from './output.ts'
import { withSessionService } from './session-access.ts'

/** Ended sessions older than this many days are purged by `sessions cleanup` without `--days`. Default is 30. */
export const DEFAULT_CLEANUP_DAYS = 30

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

/** Options of {@link runSessionsCommand}. */
export interface SessionsCommandOptions {
  configPath: string
  env?: NodeJS.ProcessEnv
  json: boolean
  /** `--all`, for `sessions list`: include ended sessions. */
  all?: boolean
  /** `--days`, for `sessions cleanup`, as typed. */
  days?: string
  /** Default is the system clock. */
  clock?: Clock
}

/**
 * A session as `sessions list --json` prints it. Its secret is never stored, so it cannot be
 * printed; tokens stay in the (encrypted) token cache.
 */
export interface SessionView {
  id: string
  username: string
  subject: string | null
  mode: SessionMode
  ip: string | null
  user_agent: string | null
  created_at: string
  last_seen_at: string
  /** Absolute end. */
  expires_at: string
  /** When it ends if unused: last seen plus `session.idle_timeout_minutes`. */
  idle_expires_at: string
  ended_at: string | null
  end_reason: string | null
}

/** What `sessions cleanup` removed. */
export interface CleanupReport {
  expired_sessions: number
  purged_sessions: number
  purged_tokens: number
  purged_login_attempts: number
  days: number
}

/** What `sessions metrics` reports. */
export interface SessionMetrics {
  active_sessions: Record<SessionMode, number> & { total: number }
  /** Logins recorded in the audit log in the last hour, by mode and result. */
  logins_last_hour: Array<{ mode: string, result: string, count: number }>
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

/** The public view of a session row. */
export function sessionView (session: SessionRecord, idleMs: number): SessionView {
  return {
    id: session.id,
    username: session.username,
    subject: session.subject,
    mode: session.mode,
    ip: session.ip,
    user_agent: session.userAgent,
    created_at: new Date(session.createdAt).toISOString(),
    last_seen_at: new Date(session.lastSeenAt).toISOString(),
    expires_at: new Date(session.expiresAt).toISOString(),
    idle_expires_at: new Date(session.lastSeenAt + idleMs).toISOString(),
    ended_at: iso(session.endedAt),
    end_reason: session.endReason
  }
}

/** `gatehouse sessions list|invalidate|logout-user|cleanup|metrics`, through the session service. */
export async function runSessionsCommand (sub: string | undefined, args: string[], options: SessionsCommandOptions, output: Output): Promise<number> {
  // Which options each subcommand takes is checked by run.ts against usage.ts.
  switch (sub) {
    case 'list':
      if (args.length > 1) throw new UsageError('usage: gatehouse sessions list [USER] [--all] [--json]')
      return await withStore(options, (store) => list(store, args[0]?.trim(), options, output))
    case 'invalidate': {
      const id = args[0]?.trim()
      if (args.length !== 1 || id === undefined || id.length === 0) throw new UsageError('usage: gatehouse sessions invalidate ID')
      return await withStore(options, (store) => invalidate(store, id, options, output))
    }
    case 'logout-user': {
      const username = args[0]?.trim()
      if (args.length !== 1 || username === undefined || username.length === 0) throw new UsageError('usage: gatehouse sessions logout-user USER')
      return await withStore(options, (store) => logoutUser(store, username, options, output))
    }
    case 'cleanup': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse sessions cleanup [--days N]')
      if (options.days !== undefined && !/^\d+$/.test(options.days.trim())) throw new UsageError(`--days expects a whole number of days, received ${JSON.stringify(options.days)}`)
      const days = options.days === undefined ? DEFAULT_CLEANUP_DAYS : Number(options.days)
      return await withStore(options, (store) => cleanup(store, days, options, output))
    }
    case 'metrics':
      if (args.length !== 0) throw new UsageError('usage: gatehouse sessions metrics [--json]')
      return await withStore(options, (store) => metrics(store, options, output))
    default:
      throw new UsageError(`unknown sessions subcommand ${JSON.stringify(sub ?? '')}: use list, invalidate, logout-user, cleanup or metrics`)
  }
}

interface Store {
  config: Config
  db: Db
  sessions: SessionService
  sync: SyncQueueRepository
  audit: AuditLogRepository
  clock: Clock
}

async function withStore (options: SessionsCommandOptions, fn: (store: Store) => Promise<number>): Promise<number> {
  const { config } = loadForServe(options.configPath, options.env)
  const { db } = openConfiguredDatabase(config)
  const clock = options.clock ?? systemClock
  try {
    const ring = new KeyRing(config.secrets.encryption_keys)
    return await withSessionService(config, db, clock, async (sessions) => await fn({
      config,
      db,
      sessions,
      sync: new SyncQueueRepository(db, ring),
      audit: new AuditLogRepository(db),
      clock
    }))
  } finally {
    db.close()
  }
}

const idleMsOf = (config: Config): number => config.session.idle_timeout_minutes * MINUTE

/** Sessions carry the user name as it was when they began; a local user's row has the canonical spelling. */
function canonicalUsername (store: Store, given: string): string {
  return new UsersRepository(store.db).find(given)?.username ?? given
}

async function list (store: Store, given: string | undefined, options: SessionsCommandOptions, output: Output): Promise<number> {
  const username = given === undefined ? undefined : canonicalUsername(store, given)
  const sessions = await store.sessions.list({ ...(username !== undefined ? { username } : {}), includeEnded: options.all === true })
  const views = sessions.map((s) => sessionView(s, idleMsOf(store.config)))
  emit(output, options.json, views, () => views.length === 0
    ? `no ${options.all === true ? '' : 'live '}sessions${username !== undefined ? ` of ${username}` : ''}`
    : formatSessions(views, options.all === true))
  return 0
}

async function invalidate (store: Store, id: string, options: SessionsCommandOptions, output: Output): Promise<number> {
  const session = await store.sessions.find(id)
  if (session === null) return fail(output, `no such session ${JSON.stringify(id)}`)
  const now = store.clock.now()
  if (!await store.sessions.end(id, 'invalidated')) return fail(output, `session ${id} already ended (${(await store.sessions.find(id))?.endReason ?? 'no reason recorded'})`)
  store.audit.append({ actor: session.username, action: 'session_invalidated', result: 'success', authMode: session.mode, reason: 'invalidated', detail: { via: 'cli', session_id: id } }, now)
  emit(output, options.json, { id, username: session.username, ended_at: new Date(now).toISOString() }, () => `invalidated session ${id} of ${session.username}`)
  return 0
}

async function logoutUser (store: Store, given: string, options: SessionsCommandOptions, output: Output): Promise<number> {
  const username = canonicalUsername(store, given)
  // Known: a local user or cached credential, or anyone who ever had a session here (a
  // Keycloak user needs no row). A typo must not read as "had no live sessions".
  if (new UsersRepository(store.db).find(username) === null && (await store.sessions.list({ username, includeEnded: true })).length === 0) {
    return fail(output, `no such user ${JSON.stringify(given)}: no local user and no session of that name`)
  }
  const now = store.clock.now()
  const live = await store.sessions.list({ username })
  // By name, so a session that began on another replica a moment ago ends too.
  const endedIds = await store.sessions.endWhere({ username }, 'logout_user')
  const ended = [...live.map((s) => s.id).filter((id) => endedIds.includes(id)), ...endedIds.filter((id) => !live.some((s) => s.id === id))]
  const result = store.db.transaction(() => {
    // Keycloak sessions end too, when the sync worker replays this (Admin API: POST /users/{id}/logout);
    // a generic provider has no such API, so only Gatehouse's sessions end.
    const subjects = store.config.keycloak.kind === 'keycloak' ? [...new Set(live.map((s) => s.subject).filter((s) => s !== null))] : []
    const queued = subjects.map((subject) => store.sync.enqueue({ username, operation: 'logout_user', payload: { keycloak_id: subject, sid: null } }, now))
    if (ended.length > 0) {
      store.audit.append({ actor: username, action: 'session_invalidated', result: 'success', reason: 'logout_user', detail: { via: 'cli', session_ids: ended, keycloak_logout_queued: queued.length > 0 } }, now)
    }
    return { ended, queued }
  })()
  emit(output, options.json, { username, ended_sessions: result.ended, keycloak_logout_queued: result.queued.length > 0, sync_items: result.queued }, () => {
    const ended = result.ended.length === 0 ? `${username} had no live sessions` : `ended ${result.ended.length} session${result.ended.length === 1 ? '' : 's'} of ${username}`
    return result.queued.length > 0 ? `${ended}; Keycloak logout queued for the sync worker` : ended
  })
  return 0
}

async function cleanup (store: Store, days: number, options: SessionsCommandOptions, output: Output): Promise<number> {
  const now = store.clock.now()
  const { session, security } = store.config
  let expired = await store.sessions.expire()
  // expires_at was fixed at login; a since-shortened absolute timeout applies to older sessions too.
  for (const s of await store.sessions.list()) {
    if (s.createdAt + session.absolute_timeout_hours * HOUR <= now && await store.sessions.end(s.id, 'expired')) expired++
  }
  // Tokens first: their rows go with their sessions (ON DELETE CASCADE) and would go uncounted.
  const purgedTokens = await store.sessions.cleanupTokens()
  const purgedSessions = await store.sessions.purge(days * DAY)
  const purgedAttempts = await store.sessions.store.purgeAttempts(now - security.window_minutes * MINUTE)
  const report: CleanupReport = { expired_sessions: expired, purged_sessions: purgedSessions, purged_tokens: purgedTokens, purged_login_attempts: purgedAttempts, days }
  const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`
  emit(output, options.json, report, () => [
    `ended ${plural(report.expired_sessions, 'expired session', 'expired sessions')}`,
    `purged ${plural(report.purged_sessions, 'session', 'sessions')} ended more than ${plural(days, 'day', 'days')} ago`,
    `removed ${plural(report.purged_tokens, 'cached token set', 'cached token sets')} (past the grace period or of ended sessions)`,
    `removed ${plural(report.purged_login_attempts, 'login attempt', 'login attempts')} older than ${plural(security.window_minutes, 'minute', 'minutes')}`
  ].join('\n'))
  return 0
}

async function metrics (store: Store, options: SessionsCommandOptions, output: Output): Promise<number> {
  const byMode = await store.sessions.countByMode()
  const report: SessionMetrics = {
    active_sessions: { ...byMode, total: byMode.keycloak + byMode.cached + byMode.local },
    logins_last_hour: store.audit.loginCounts(store.clock.now() - HOUR)
  }
  emit(output, options.json, report, () => [
    `active sessions: ${report.active_sessions.total} (keycloak ${byMode.keycloak}, cached ${byMode.cached}, local ${byMode.local})`,
    '',
    'logins in the last hour:',
    report.logins_last_hour.length === 0
      ? '  none'
      : formatTable(report.logins_last_hour, [
        { header: 'mode', value: (r) => r.mode },
        { header: 'result', value: (r) => r.result },
        { header: 'count', value: (r) => r.count }
      ])
  ].join('\n'))
  return 0
}

function fail (output: Output, message: string): number {
  output.err(`gatehouse: ${message}`)
  return 1
}

function formatSessions (sessions: SessionView[], all: boolean): string {
  const expires = (s: SessionView): string => (s.idle_expires_at < s.expires_at ? s.idle_expires_at : s.expires_at)
  return formatTable(sessions, [
    { header: 'id', value: (s) => s.id },
    { header: 'user', value: (s) => s.username },
    { header: 'mode', value: (s) => s.mode },
    { header: 'ip', value: (s) => s.ip },
    { header: 'created', value: (s) => s.created_at },
    { header: 'last seen', value: (s) => s.last_seen_at },
    { header: 'expires', value: (s) => (s.ended_at === null ? expires(s) : null) },
    ...(all ? [{ header: 'ended', value: (s: SessionView) => (s.ended_at === null ? null : `${s.ended_at} (${s.end_reason ?? '-'})`) }] : [])
  ])
}
