import t from 'tap'
import Database from 'better-sqlite3'
import { Value } from '@sinclair/typebox/value'
import { migrate } from '../../../src/store/migrate.ts'
import { UsersRepository } from '../../../src/store/users.ts'
import { AuditLogRepository } from '../../../src/store/audit-log.ts'
import { PasswordResetRepository } from '../../../src/store/password-resets.ts'
import { SyncQueueRepository } from '../../../src/store/sync-queue.ts'
import { KeyRing } from '../../../src/store/crypto.ts'
import { createLogger } from '../../../src/log.ts'
import { PasswordResetService, hashResetToken } from '../../../src/session/password-reset.ts'
import type { MailMessage } from '../../../src/notify/mailer.ts'
import { ConfigSchema, type Config } from '../../../src/config/schema.ts'
import { manualClock } from '../../fixtures/clock.ts'
import { TEST_SECRETS } from '../../fixtures/gatehouse.ts'

function service (statements: string[]) {
  // Every statement SQLite runs, in order: the path a request takes, read from the database's side.
  // better-sqlite3 reports statements with their values expanded: those are made `?` again.
  const shape = (sql: string): string => sql.replace(/x'[0-9a-f]*'/gi, '?').replace(/'(?:[^']|'')*'/g, '?').replace(/\b(?:\d+(?:\.\d+)?|NULL)\b/g, '?').replace(/\s+/g, ' ').trim()
  const db = new Database(':memory:', { verbose: (sql) => { statements.push(shape(String(sql))) } })
  migrate(db)
  const config = Value.Default(ConfigSchema, { upstream: { url: 'http://app' }, keycloak: { issuer: 'http://kc/realms/r', server: 'http://kc', client_id: 'app' }, secrets: TEST_SECRETS, auth: { primary: 'local' }, password_reset: { enabled: true } }) as unknown as Config
  const clock = manualClock(Date.parse('2025-01-01T00:00:00Z'))
  const users = new UsersRepository(db)
  users.create({ username: 'carol', email: 'carol@example.test', passwordHash: 'scrypt$x' }, clock.now())
  const deliveries: Array<MailMessage | null> = []
  const metrics: string[] = []
  const reset = new PasswordResetService({
    config: { ...config, server: { ...config.server, prefix: '/_gatehouse' } } as Config,
    resets: new PasswordResetRepository(db),
    users,
    audit: new AuditLogRepository(db),
    queue: new SyncQueueRepository(db, new KeyRing(TEST_SECRETS.encryption_keys)),
    queued: () => {},
    endSessions: () => 0,
    outbox: { deliver: (m) => { deliveries.push(m) } },
    clock,
    log: createLogger({ level: 'silent' }),
    metrics: { inc: (l) => { metrics.push(l.result) } }
  })
  return { db, reset, deliveries, metrics, clock }
}

t.test('a reset request runs the same SQL and calls the outbox once, whether or not the user exists', async (t) => {
  const known: string[] = []
  const a = service(known)
  known.length = 0
  t.same(a.reset.request('carol', '10.0.0.1', 'https://app.example.test'), { ok: true })
  const unknown: string[] = []
  const b = service(unknown)
  unknown.length = 0
  t.same(b.reset.request('nobody', '10.0.0.1', 'https://app.example.test'), { ok: true })
  t.ok(known.length >= 5, `the request ran ${known.length} statements`)
  t.same(unknown, known, 'statement for statement, the same path (the same SQL text; only bound values differ)')
  t.equal(a.deliveries.length, 1)
  t.equal(b.deliveries.length, 1, 'the outbox is called for the unknown name too')
  t.equal(b.deliveries[0], null, '...with nothing to send')
  t.match(a.deliveries[0], { to: ['carol@example.test'], subject: 'Reset your password' })
  t.same(a.metrics, b.metrics, 'and counted alike')
})

t.test('the token is stored only as its SHA-256, expires, and works once', async (t) => {
  const { db, reset, deliveries, clock } = service([])
  reset.request('carol', null, 'https://app.example.test')
  const token = /token=([A-Za-z0-9_-]{43})/.exec(deliveries[0]?.text ?? '')?.[1] as string
  const stored = db.prepare('SELECT token_hash FROM password_reset_tokens').pluck().all() as Buffer[]
  t.same(stored, [hashResetToken(token)], 'the hash, not the token')
  t.notMatch(JSON.stringify(db.prepare('SELECT * FROM password_reset_tokens').all()), token)
  t.ok(reset.usable(token))
  t.match(await reset.reset(token, 'a-brand-new-pass', 'a-brand-new-pass', null), { ok: true, username: 'carol' })
  t.match(await reset.reset(token, 'a-brand-new-pass', 'a-brand-new-pass', null), { ok: false, reason: 'invalid_token' }, 'not twice')
  reset.request('carol', null, 'https://app.example.test')
  const second = /token=([A-Za-z0-9_-]{43})/.exec(deliveries[1]?.text ?? '')?.[1] as string
  clock.advance(30 * 60_000)
  t.notOk(reset.usable(second), 'not at its expiry')
  t.match(await reset.reset(second, 'a-brand-new-pass', 'a-brand-new-pass', null), { ok: false, reason: 'invalid_token' })
  t.match(await reset.reset('', 'a-brand-new-pass', 'a-brand-new-pass', null), { ok: false, reason: 'invalid_token' })
})
