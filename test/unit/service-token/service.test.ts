import t from 'tap'
import { readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import type { ServiceTokensConfig } from '../../../src/config/schema.ts'
import { configuredDelivery } from '../../../src/service-token/deliver.ts'
import { ServiceTokenService } from '../../../src/service-token/service.ts'
import { AuditLogRepository } from '../../../src/store/audit-log.ts'
import { openDatabase } from '../../../src/store/db.ts'
import { manualClock } from '../../fixtures/clock.ts'
import { captureLog } from '../../fixtures/gatehouse.ts'

const HOUR = 3_600_000
const DAY = 24 * HOUR

function config (overrides: Partial<ServiceTokensConfig> = {}, autoRotate: Partial<ServiceTokensConfig['auto_rotate']> = {}): ServiceTokensConfig {
  return {
    enabled: true,
    default_expires_days: 90,
    default_grace_days: 7,
    expiry_warning_days: 14,
    grace_warning_hours: 24,
    max_failed_attempts: 20,
    lockout_minutes: 15,
    ...overrides,
    auto_rotate: { check_interval_minutes: 60, hook_timeout_seconds: 30, ...autoRotate }
  }
}

function setup (t: { teardown: (fn: () => unknown) => void }, cfg: ServiceTokensConfig = config(), baseDir = '/') {
  const { db } = openDatabase({ path: ':memory:' })
  t.teardown(() => db.close())
  const clock = manualClock(Date.UTC(2030, 0, 1))
  const log = captureLog()
  const audit = new AuditLogRepository(db)
  const service = new ServiceTokenService({ db, clock, log: log.logger, audit, config: cfg, delivery: configuredDelivery(cfg.auto_rotate, baseDir) })
  return { db, clock, log, audit, service }
}

t.test('serviceTokenAlerts: a token expiring within expiry_warning_days', async (t) => {
  const { service, clock } = setup(t)
  await service.create({ name: 'soon', roles: ['a'], expiresDays: 20, via: 'test' })
  await service.create({ name: 'later', roles: ['a'], expiresDays: 90, via: 'test' })
  await service.create({ name: 'revoked', roles: ['a'], expiresDays: 10, via: 'test' })
  await service.revoke('revoked', { via: 'test' })
  t.same(service.serviceTokenAlerts(), [], 'nothing within 14 days yet')
  clock.advance(7 * DAY)
  t.same(service.serviceTokenAlerts(), [{ kind: 'expiring', name: 'soon', expires_at: new Date(clock.now() + 13 * DAY).toISOString(), seconds_left: 13 * 86_400, auto_rotate_days: null }])
  t.same(service.serviceTokenAlerts(clock.now() + 14 * DAY), [], 'an expired token no longer alerts as expiring')
})

t.test('serviceTokenAlerts: a previous token still in use near the end of its grace period', async (t) => {
  const { service, clock } = setup(t)
  const { token: old } = await service.create({ name: 'ci', roles: ['a'], via: 'test' })
  await service.rotate('ci', { graceDays: 3, via: 'test' })
  clock.advance(2 * DAY + HOUR) // 23 hours of grace left
  t.same(service.serviceTokenAlerts(), [], 'not used since the rotation: no alert')
  t.equal(service.authenticate(old, '10.0.0.1').ok, true)
  const alerts = service.serviceTokenAlerts()
  t.equal(alerts.length, 1)
  t.match(alerts[0], { kind: 'previous_in_use', name: 'ci', seconds_left: 23 * 3600, previous_last_used_at: new Date(clock.now()).toISOString() })
  service.flushUses()
  t.equal(service.serviceTokenAlerts().length, 1, 'the same once the use is written')
  clock.advance(23 * HOUR)
  t.same(service.serviceTokenAlerts(), [], 'the grace period is over')
})

t.test('last used is written at most once a minute per token, in batches', async (t) => {
  const { service, clock, db } = setup(t)
  const { token } = await service.create({ name: 'busy', roles: ['a'], via: 'test' })
  let writes = 0
  const counter = (): void => { writes++ }
  db.function('count_write', counter)
  db.exec("CREATE TRIGGER count_use AFTER UPDATE OF current_last_used_at ON service_tokens BEGIN SELECT count_write(); END")
  for (let i = 0; i < 100; i++) service.authenticate(token, '10.0.0.1')
  t.equal(writes, 0, 'nothing written on the request path')
  service.flushUses()
  t.equal(writes, 1)
  clock.advance(30_000)
  for (let i = 0; i < 100; i++) service.authenticate(token, '10.0.0.1')
  service.flushUses()
  t.equal(writes, 1, 'within the minute: nothing more')
  clock.advance(30_000)
  service.authenticate(token, '10.0.0.1')
  service.flushUses()
  t.equal(writes, 2)
  t.equal(service.list()[0]?.last_used_at, new Date(clock.now()).toISOString())
})

t.test('a rotation never lets the previous token outlive its own expiry', async (t) => {
  const { service, clock } = setup(t)
  const { token: old } = await service.create({ name: 'short', roles: ['a'], expiresDays: 3, via: 'test' })
  clock.advance(2 * DAY)
  const { record } = await service.rotate('short', { graceDays: 7, via: 'test' })
  t.equal(record.previousValidUntil, clock.now() + DAY, 'one day left of its own life, not seven')
  clock.advance(DAY)
  t.match(service.authenticate(old, undefined), { ok: false, reason: 'service_expired' })
})

t.test('automatic rotation is off without a delivery: a warning, nothing rotated', async (t) => {
  const { service, clock, log } = setup(t)
  await service.create({ name: 'auto', roles: ['a'], expiresDays: 30, autoRotateDays: 7, via: 'test' })
  clock.advance(24 * DAY)
  t.same(await service.autoRotateDue(), [])
  t.same(await service.autoRotateDue(), [])
  t.equal(log.entries().filter((e) => e.level === 40 && String(e.msg).includes('due for automatic rotation')).length, 1, 'warned once')
  t.match(service.serviceTokenAlerts(), [{ kind: 'expiring', name: 'auto' }], 'and the expiry alert fires')
})

t.test('automatic rotation writes the new token to NAME.token (0600); the old one keeps its remaining life', async (t) => {
  const dir = t.testdir()
  const { service, clock, audit } = setup(t, config({}, { output_dir: 'tokens-out' }), dir)
  const { mkdirSync } = await import('node:fs')
  mkdirSync(join(dir, 'tokens-out'))
  const { token: old } = await service.create({ name: 'auto', roles: ['a'], expiresDays: 30, autoRotateDays: 7, via: 'test' })
  await service.create({ name: 'manual', roles: ['a'], expiresDays: 30, via: 'test' })
  clock.advance(22 * DAY)
  t.same(await service.autoRotateDue(), [], 'not yet: 8 days left')
  t.same(service.serviceTokenAlerts().map((a) => a.name), ['manual'], 'an auto-rotating token does not alert before its rotation is due')
  clock.advance(DAY)
  t.same(await service.autoRotateDue(), ['auto'])
  const file = join(dir, 'tokens-out', 'auto.token')
  t.equal(statSync(file).mode & 0o777, 0o600)
  const fresh = readFileSync(file, 'utf8').trim()
  t.not(fresh, old)
  t.match(service.authenticate(fresh, undefined), { ok: true, identity: { user: 'service:auto' } })
  t.match(service.authenticate(old, undefined), { ok: true }, 'the old one still works')
  t.match(audit.since(0, 'service_token_rotated'), [{ result: 'success', detail: { via: 'auto_rotate', name: 'auto' } }])
  t.same(await service.autoRotateDue(), [], 'nothing more to do')
  clock.advance(7 * DAY)
  t.match(service.authenticate(old, undefined), { ok: false, reason: 'service_expired' }, 'the old one ends at its own expiry')
  t.match(service.authenticate(fresh, undefined), { ok: true })
})

t.test('a failing hook takes the rotation back: the old token stays current', async (t) => {
  const dir = t.testdir()
  const hook = join(dir, 'fail.sh')
  writeFileSync(hook, '#!/bin/sh\ncat >/dev/null\necho "got it" >&2\nexit 3\n')
  chmodSync(hook, 0o755)
  const { service, clock, log, audit } = setup(t, config({}, { hook: ['fail.sh'] }), dir)
  const { token: old, record } = await service.create({ name: 'auto', roles: ['a'], expiresDays: 30, autoRotateDays: 7, via: 'test' })
  clock.advance(25 * DAY)
  t.same(await service.autoRotateDue(), [])
  const after = service.repository.find('auto')
  t.equal(after?.currentId, record.currentId, 'the old token is current again')
  t.equal(after?.expiresAt, record.expiresAt)
  t.equal(after?.previousId, null)
  t.match(service.authenticate(old, undefined), { ok: true })
  const line = log.entries().find((e) => e.msg === 'automatic rotation taken back: the new token could not be delivered')
  t.match(line, { level: 50, code: 'ERR_SERVICE_TOKEN_DELIVERY', reason: /exit code 3/, undone: true })
  t.notOk(log.text().includes('got it'), 'the hook\'s output is never logged')
  t.match(audit.since(0, 'service_token_rotated'), [{ result: 'success', detail: { via: 'auto_rotate' } }, { result: 'failure', reason: 'delivery_failed', detail: { undone: true } }], 'the rotation, then its taking back')
})

t.test('a hook gets the token on standard input and only its own environment', async (t) => {
  const dir = t.testdir()
  const hook = join(dir, 'ok.sh')
  writeFileSync(hook, `#!/bin/sh\ncat > "${join(dir, 'got')}"\nenv > "${join(dir, 'env')}"\n`)
  chmodSync(hook, 0o755)
  const { service, clock } = setup(t, config({}, { hook: [hook] }), dir)
  await service.create({ name: 'hooked', roles: ['a'], expiresDays: 30, autoRotateDays: 7, via: 'test' })
  clock.advance(25 * DAY)
  t.same(await service.autoRotateDue(), ['hooked'])
  const token = readFileSync(join(dir, 'got'), 'utf8').trim()
  t.match(service.authenticate(token, undefined), { ok: true })
  const env = readFileSync(join(dir, 'env'), 'utf8')
  t.match(env, /^GATEHOUSE_TOKEN_NAME=hooked$/m)
  t.match(env, new RegExp(`^GATEHOUSE_TOKEN_ID=${service.repository.find('hooked')?.currentId ?? 'x'}$`, 'm'))
  t.notMatch(env, /GATEHOUSE_ENCRYPTION_KEY|GATEHOUSE_COOKIE_KEY/)
  t.notOk(env.includes(token), 'the token is not in its environment')
})

t.test('cleanup forgets previous tokens past their grace and purges tokens revoked or expired long ago', async (t) => {
  const { service, clock } = setup(t)
  await service.create({ name: 'rotated', roles: ['a'], via: 'test' })
  await service.rotate('rotated', { graceDays: 1, via: 'test' })
  await service.create({ name: 'revoked', roles: ['a'], via: 'test' })
  await service.revoke('revoked', { via: 'test' })
  await service.create({ name: 'short', roles: ['a'], expiresDays: 1, via: 'test' })
  await service.create({ name: 'kept', roles: ['a'], via: 'test' })
  t.same(await service.cleanup(30), { previous_cleared: 0, purged: 0, days: 30 }, 'nothing is old enough yet')
  clock.advance(2 * DAY)
  t.same(await service.cleanup(30), { previous_cleared: 1, purged: 0, days: 30 })
  t.equal(service.repository.find('rotated')?.previousId, null)
  clock.advance(30 * DAY)
  t.same(await service.cleanup(30), { previous_cleared: 0, purged: 2, days: 30 })
  t.same(service.list().map((v) => v.name), ['kept', 'rotated'])
})
