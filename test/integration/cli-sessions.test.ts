import t from 'tap'
import { randomBytes, randomUUID } from 'node:crypto'
import { join } from 'node:path'
import type { Config } from '../../src/config/schema.ts'
import { AuditLogRepository } from '../../src/store/audit-log.ts'
import { KeyRing, sha256 } from '../../src/store/crypto.ts'
import { openDatabase, type Db } from '../../src/store/db.ts'
import { LoginAttemptsRepository } from '../../src/store/login-attempts.ts'
import { SessionsRepository, type SessionMode, type SessionRecord } from '../../src/store/sessions.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import { TokenCacheRepository } from '../../src/store/token-cache.ts'
import { runInProcess, type CliResult } from '../fixtures/cli.ts'
import { writeConfig } from '../fixtures/gatehouse.ts'

const SETTINGS = {
  upstream: { url: 'http://127.0.0.1:9' },
  keycloak: { issuer: 'https://sso.example.com/realms/acme', server: 'http://127.0.0.1:9', client_id: 'app' }
}
const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const ACCESS_TOKEN = 'eyJhbGciOiJSUzI1NiJ9.access-token-that-must-never-print'
const REFRESH_TOKEN = 'refresh-token-that-must-never-print'

interface Fixture {
  config: Config
  sessions: SessionsRepository
  tokens: TokenCacheRepository
  sync: SyncQueueRepository
  audit: AuditLogRepository
  db: Db
  /** Inserts a session (times relative to now, in ms); returns its id. */
  session: (s: { username: string, mode?: SessionMode, subject?: string | null, ip?: string | null, createdAgo?: number, seenAgo?: number, expiresIn?: number, tokens?: { cachedAgo: number, accessExpiresIn: number } }) => string
  /** `gatehouse sessions ARGS -c <this config>`, in this process. */
  run: (args: string[]) => Promise<CliResult>
  tokenRow: (sessionId: string) => unknown
}

/** A config and database in a fresh directory; sessions are written straight through the repository. */
function setup (t: { testdir: () => string, teardown: (fn: () => unknown) => void }, settings: Record<string, unknown> = {}): Fixture {
  const dir = t.testdir()
  const config = writeConfig(dir, { ...SETTINGS, ...settings })
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
  t.teardown(() => db.close())
  const ring = new KeyRing(config.secrets.encryption_keys)
  const sessions = new SessionsRepository(db)
  const tokens = new TokenCacheRepository(db, ring)
  return {
    config,
    db,
    sessions,
    tokens,
    sync: new SyncQueueRepository(db, ring),
    audit: new AuditLogRepository(db),
    session: (s) => {
      const now = Date.now()
      const id = randomUUID()
      const mode = s.mode ?? 'local'
      const record: SessionRecord = {
        id,
        username: s.username,
        subject: s.subject ?? null,
        mode,
        keycloakSid: s.subject == null ? null : randomUUID(),
        identity: { user: s.subject ?? s.username, preferredUsername: s.username, email: null, groups: [], roles: [] },
        ip: s.ip ?? '10.0.0.7',
        userAgent: 'test',
        createdAt: now - (s.createdAgo ?? MINUTE),
        lastSeenAt: now - (s.seenAgo ?? 0),
        expiresAt: now + (s.expiresIn ?? 8 * HOUR),
        endedAt: null,
        endReason: null,
        localBasis: mode !== 'keycloak'
      }
      sessions.insert(record, sha256(randomBytes(32)))
      if (s.tokens !== undefined) {
        tokens.put({ sessionId: id, username: s.username, accessToken: ACCESS_TOKEN, refreshToken: REFRESH_TOKEN, idToken: null, accessExpiresAt: now + s.tokens.accessExpiresIn, refreshExpiresAt: null, cachedAt: now - s.tokens.cachedAgo, refreshedAt: null })
      }
      return id
    },
    run: (args) => runInProcess(['sessions', ...args, '-c', join(dir, 'config.yaml')]),
    tokenRow: (sessionId) => db.prepare('SELECT session_id FROM token_cache WHERE session_id = ?').get(sessionId)
  }
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

t.test('sessions list shows live sessions newest first, one user\'s, or with --all the ended ones too', async (t) => {
  const g = setup(t)
  const older = g.session({ username: 'alice', createdAgo: 2 * HOUR, seenAgo: 5 * MINUTE, ip: '192.0.2.1' })
  const newer = g.session({ username: 'bob', mode: 'keycloak', subject: 'sub-bob', createdAgo: HOUR, tokens: { cachedAgo: 0, accessExpiresIn: 5 * MINUTE } })
  const ended = g.session({ username: 'alice', createdAgo: 3 * HOUR })
  g.sessions.end(ended, 'logout', Date.now() - HOUR)

  const live = await g.run(['list', '--json'])
  t.equal(live.code, 0, live.stderr)
  const listed = JSON.parse(live.stdout) as Array<Record<string, unknown>>
  t.same(listed.map((s) => s.id), [newer, older])
  const stored = g.sessions.find(older) as SessionRecord
  t.same(listed[1], {
    id: older,
    username: 'alice',
    subject: null,
    mode: 'local',
    ip: '192.0.2.1',
    user_agent: 'test',
    created_at: iso(stored.createdAt),
    last_seen_at: iso(stored.lastSeenAt),
    expires_at: iso(stored.expiresAt),
    idle_expires_at: iso(stored.lastSeenAt + g.config.session.idle_timeout_minutes * MINUTE),
    ended_at: null,
    end_reason: null
  })
  t.notMatch(live.stdout, ACCESS_TOKEN)
  t.notMatch(live.stdout, REFRESH_TOKEN)

  const alice = JSON.parse((await g.run(['list', 'alice', '--json'])).stdout) as Array<{ id: string }>
  t.same(alice.map((s) => s.id), [older])
  const all = JSON.parse((await g.run(['list', 'alice', '--all', '--json'])).stdout) as Array<{ id: string, ended_at: string | null, end_reason: string | null }>
  t.same(all.map((s) => [s.id, s.end_reason]), [[older, null], [ended, 'logout']])
  t.equal(all[1]?.ended_at, iso(g.sessions.find(ended)?.endedAt ?? null))

  const text = await g.run(['list'])
  t.equal(text.code, 0)
  const lines = text.stdout.trimEnd().split('\n')
  t.match(lines[0], /^ID +USER +MODE +IP +CREATED +LAST SEEN +EXPIRES$/)
  t.match(lines[1], new RegExp(`^${newer} +bob +keycloak +10\\.0\\.0\\.7 +\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z +\\d{4}-`))
  t.match(lines[2], new RegExp(`^${older} +alice +local +192\\.0\\.2\\.1 +${iso(stored.createdAt)} +${iso(stored.lastSeenAt)} +${iso(stored.lastSeenAt + HOUR)}$`), 'expires shows the earlier of idle and absolute end')
  const none = await g.run(['list', 'carol'])
  t.equal(none.stdout, 'no live sessions of carol\n')
})

t.test('sessions invalidate ends one session, drops its cached tokens and audits it', async (t) => {
  const g = setup(t)
  const target = g.session({ username: 'bob', mode: 'keycloak', subject: 'sub-bob', tokens: { cachedAgo: 0, accessExpiresIn: 5 * MINUTE } })
  const other = g.session({ username: 'bob', mode: 'keycloak', subject: 'sub-bob', tokens: { cachedAgo: 0, accessExpiresIn: 5 * MINUTE } })
  t.ok(g.tokenRow(target), 'the token row is there before')

  const result = await g.run(['invalidate', target])
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stdout, `invalidated session ${target} of bob\n`)
  const ended = g.sessions.find(target)
  t.equal(ended?.endReason, 'invalidated')
  t.type(ended?.endedAt, 'number')
  t.equal(g.tokenRow(target), undefined, 'its token_cache row is gone')
  t.equal(g.sessions.find(other)?.endedAt, null, 'the user\'s other session lives on')
  t.ok(g.tokenRow(other))
  t.same(g.sync.list(), [], 'nothing is queued for Keycloak')
  t.same(g.audit.since(0).map((a) => ({ actor: a.actor, action: a.action, reason: a.reason, authMode: a.authMode, detail: a.detail })),
    [{ actor: 'bob', action: 'session_invalidated', reason: 'invalidated', authMode: 'keycloak', detail: { via: 'cli', session_id: target } }])

  const again = await g.run(['invalidate', target])
  t.equal(again.code, 1)
  t.equal(again.stderr, `gatehouse: session ${target} already ended (invalidated)\n`)
  const unknown = await g.run(['invalidate', 'no-such-id', '--json'])
  t.equal(unknown.code, 1)
  t.equal(unknown.stderr, 'gatehouse: no such session "no-such-id"\n')
  t.equal(g.audit.since(0).length, 1)
})

t.test('sessions logout-user ends every live session of the user and queues the Keycloak logout', async (t) => {
  const g = setup(t)
  const kc = g.session({ username: 'bob', mode: 'keycloak', subject: 'sub-bob', tokens: { cachedAgo: 0, accessExpiresIn: 5 * MINUTE } })
  const cached = g.session({ username: 'bob', mode: 'cached', subject: 'sub-bob', tokens: { cachedAgo: 2 * HOUR, accessExpiresIn: -HOUR } })
  const local = g.session({ username: 'bob', mode: 'local' })
  const alice = g.session({ username: 'alice', mode: 'keycloak', subject: 'sub-alice', tokens: { cachedAgo: 0, accessExpiresIn: 5 * MINUTE } })

  const result = await g.run(['logout-user', 'bob', '--json'])
  t.equal(result.code, 0, result.stderr)
  const report = JSON.parse(result.stdout) as { username: string, ended_sessions: string[], keycloak_logout_queued: boolean, sync_items: string[] }
  t.equal(report.username, 'bob')
  t.same([...report.ended_sessions].sort(), [kc, cached, local].sort())
  t.equal(report.keycloak_logout_queued, true)

  for (const id of [kc, cached, local]) t.equal(g.sessions.find(id)?.endReason, 'logout_user', `${id} ended`)
  t.equal(g.tokenRow(kc), undefined)
  t.equal(g.tokenRow(cached), undefined)
  t.equal(g.sessions.find(alice)?.endedAt, null, 'another user is untouched')
  t.ok(g.tokenRow(alice))

  const queued = g.sync.list()
  t.equal(queued.length, 1, 'one logout for the one Keycloak subject')
  t.match(queued[0], { id: report.sync_items[0], username: 'bob', operation: 'logout_user', payload: { keycloak_id: 'sub-bob', sid: null }, status: 'pending', hasSecret: false })
  const audit = g.audit.since(0)
  t.equal(audit.length, 1)
  t.match(audit[0], { actor: 'bob', action: 'session_invalidated', result: 'success', reason: 'logout_user', detail: { via: 'cli', keycloak_logout_queued: true } })
  t.same([...(audit[0]?.detail.session_ids as string[])].sort(), [kc, cached, local].sort())

  const again = await g.run(['logout-user', 'bob'])
  t.equal(again.code, 0)
  t.equal(again.stdout, 'bob had no live sessions\n')
  t.equal(g.sync.list().length, 1, 'nothing more is queued')
})

t.test('sessions logout-user of a user with only local sessions queues nothing', async (t) => {
  const g = setup(t)
  const one = g.session({ username: 'carol' })
  const two = g.session({ username: 'carol' })
  const result = await g.run(['logout-user', 'carol'])
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stdout, 'ended 2 sessions of carol\n')
  t.equal(g.sessions.find(one)?.endReason, 'logout_user')
  t.equal(g.sessions.find(two)?.endReason, 'logout_user')
  t.same(g.sync.list(), [])
})

t.test('sessions cleanup ends expired sessions and purges old sessions, stale tokens and old login attempts', async (t) => {
  // Idle 60 minutes, absolute 12 hours (the defaults), token grace 1 hour, lockout window 15 minutes.
  const g = setup(t, { keycloak: { ...SETTINGS.keycloak, resilience: { token_grace_period_hours: 1 } } })
  const fresh = g.session({ username: 'fresh', mode: 'keycloak', subject: 's1', seenAgo: MINUTE, tokens: { cachedAgo: 10 * MINUTE, accessExpiresIn: 5 * MINUTE } })
  const staleTokens = g.session({ username: 'stale', mode: 'cached', subject: 's2', seenAgo: MINUTE, tokens: { cachedAgo: 2 * HOUR, accessExpiresIn: -HOUR } })
  const idle = g.session({ username: 'idle', mode: 'keycloak', subject: 's3', seenAgo: 2 * HOUR, tokens: { cachedAgo: 10 * MINUTE, accessExpiresIn: 5 * MINUTE } })
  const pastEnd = g.session({ username: 'past', seenAgo: MINUTE, expiresIn: -MINUTE })
  // Began 13 hours ago with a longer lifetime than today's 12-hour absolute timeout.
  const tooOld = g.session({ username: 'old', createdAgo: 13 * HOUR, seenAgo: MINUTE, expiresIn: 11 * HOUR })
  const endedLongAgo = g.session({ username: 'gone', createdAgo: 11 * DAY, seenAgo: 10 * DAY })
  g.sessions.end(endedLongAgo, 'logout', Date.now() - 10 * DAY)
  const endedRecently = g.session({ username: 'recent', createdAgo: 2 * DAY, seenAgo: DAY })
  g.sessions.end(endedRecently, 'logout', Date.now() - DAY)
  const attempts = new LoginAttemptsRepository(g.db)
  attempts.record({ username: 'x', ip: '192.0.2.9', channel: 'form', succeeded: false }, Date.now() - 20 * MINUTE)
  attempts.record({ username: 'x', ip: '192.0.2.9', channel: 'form', succeeded: false }, Date.now() - MINUTE)

  const result = await g.run(['cleanup', '--days', '7', '--json'])
  t.equal(result.code, 0, result.stderr)
  t.same(JSON.parse(result.stdout), { expired_sessions: 3, purged_sessions: 1, purged_tokens: 2, purged_login_attempts: 1, days: 7 })

  t.equal(g.sessions.find(fresh)?.endedAt, null)
  t.ok(g.tokenRow(fresh), 'tokens inside the grace period stay')
  t.equal(g.sessions.find(staleTokens)?.endedAt, null, 'a live session keeps going')
  t.equal(g.tokenRow(staleTokens), undefined, 'but its tokens past the grace period are gone')
  for (const id of [idle, pastEnd, tooOld]) t.equal(g.sessions.find(id)?.endReason, 'expired')
  t.equal(g.tokenRow(idle), undefined, 'tokens of an expired session are gone')
  t.equal(g.sessions.find(endedLongAgo), null, 'ended more than 7 days ago: purged')
  t.equal(g.sessions.find(endedRecently)?.endReason, 'logout', 'ended 1 day ago: kept')
  t.equal((g.db.prepare('SELECT count(*) AS n FROM login_attempts').get() as { n: number }).n, 1)

  const again = await g.run(['cleanup', '--days', '1'])
  t.equal(again.code, 0, again.stderr)
  t.equal(again.stdout, [
    'ended 0 expired sessions',
    'purged 1 session ended more than 1 day ago',
    'removed 0 cached token sets (past the grace period or of ended sessions)',
    'removed 0 login attempts older than 15 minutes',
    ''
  ].join('\n'))
  t.equal(g.sessions.find(endedRecently), null)
  t.same(g.sessions.list({ includeEnded: true }).map((s) => s.id).sort(), [fresh, staleTokens, idle, pastEnd, tooOld].sort(), 'live sessions are never purged')
})

t.test('sessions cleanup --days 0 purges every ended session and never a live one', async (t) => {
  const g = setup(t, { session: { idle_timeout_minutes: 36 * 60, absolute_timeout_hours: 48 } })
  const live = g.session({ username: 'alice', seenAgo: 30 * HOUR, createdAgo: 30 * HOUR, expiresIn: HOUR })
  t.equal((await g.run(['cleanup', '--days', '0'])).code, 0)
  t.equal(g.sessions.find(live)?.endedAt, null, 'the session is still live')
})

t.test('sessions metrics counts live sessions by mode and the last hour\'s logins by mode and result', async (t) => {
  const g = setup(t)
  g.session({ username: 'a', mode: 'keycloak', subject: 'sa' })
  g.session({ username: 'b', mode: 'keycloak', subject: 'sb' })
  g.session({ username: 'c', mode: 'local' })
  const ended = g.session({ username: 'd', mode: 'cached', subject: 'sd' })
  g.sessions.end(ended, 'logout', Date.now())
  const now = Date.now()
  const login = (authMode: string | null, result: 'success' | 'failure', ago: number): void => g.audit.append({ actor: 'x', action: 'login', result, authMode }, now - ago)
  login('local', 'success', MINUTE)
  login('local', 'success', 30 * MINUTE)
  login('keycloak', 'failure', 10 * MINUTE)
  login(null, 'failure', 5 * MINUTE)
  login('keycloak', 'success', 2 * HOUR)
  g.audit.append({ actor: 'x', action: 'logout', result: 'success', authMode: 'local' }, now)

  const json = await g.run(['metrics', '--json'])
  t.equal(json.code, 0, json.stderr)
  t.same(JSON.parse(json.stdout), {
    active_sessions: { keycloak: 2, cached: 0, local: 1, total: 3 },
    logins_last_hour: [
      { mode: 'keycloak', result: 'failure', count: 1 },
      { mode: 'local', result: 'success', count: 2 },
      { mode: 'none', result: 'failure', count: 1 }
    ]
  })
  const text = await g.run(['metrics'])
  t.equal(text.code, 0)
  t.match(text.stdout, 'active sessions: 3 (keycloak 2, cached 0, local 1)')
  t.match(text.stdout, /MODE +RESULT +COUNT\nkeycloak +failure +1\nlocal +success +2\nnone +failure +1/)
})

t.test('sessions usage errors exit 2', async (t) => {
  const g = setup(t)
  const cases: Array<[string[], string]> = [
    [['cleanup', '--days', 'seven'], 'gatehouse: --days expects a whole number of days, received "seven"\n'],
    [['cleanup', '--days=-1'], 'gatehouse: --days expects a whole number of days, received "-1"\n'],
    // The fixture appends -c PATH: an option where a value should be is a forgotten value.
    [['cleanup', '--days'], 'gatehouse: option --days needs a value (to give one starting with -, write --days=-c); run gatehouse sessions --help\n'],
    [['list', '--days', '3'], 'gatehouse: option --days does not apply to "sessions list" (only to sessions cleanup); run gatehouse sessions --help\n'],
    [['metrics', '--all'], 'gatehouse: option --all does not apply to "sessions metrics" (only to sessions list); run gatehouse sessions --help\n'],
    [['list', '--frobnicate'], 'gatehouse: unknown option --frobnicate for "sessions list"; run gatehouse sessions --help\n'],
    [['invalidate'], 'gatehouse: usage: gatehouse sessions invalidate ID\n'],
    [['logout-user'], 'gatehouse: usage: gatehouse sessions logout-user USER\n'],
    [['frob'], 'gatehouse: unknown sessions subcommand "frob": use list, invalidate, logout-user, cleanup or metrics; run gatehouse sessions --help\n']
  ]
  for (const [args, message] of cases) {
    const result = await g.run(args)
    t.equal(result.code, 2, args.join(' '))
    t.equal(result.stderr, message)
  }
})
