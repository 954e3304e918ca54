import t from 'tap'
import { startCluster, type Cluster } from '../fixtures/cluster.ts'
import { manualClock, type ManualClock } from '../fixtures/clock.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { startMailServer, startWebhookReceiver, type MailServer } from '../fixtures/mail.ts'
import type { Config } from '../../src/config/schema.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import { TEST_SECRETS } from '../fixtures/gatehouse.ts'

const MINUTE = 60_000

function alertConfig (dir: string, cluster: Cluster, mail: MailServer, webhookUrl: string, alerts: Record<string, unknown> = {}): Config {
  const settings = cluster.settings()
  return writeConfig(dir, {
    ...settings,
    keycloak: { ...(settings.keycloak as Record<string, unknown>), resilience: { failure_threshold: 1, cooldown_seconds: 60, health_check_cache_seconds: 30 } },
    sync: { enabled: false },
    smtp: mail.settings(),
    alerts: {
      enabled: true,
      circuit_open_minutes_threshold: 5,
      repeat_interval_minutes: 30,
      webhook: { enabled: true, url: webhookUrl },
      email: { enabled: true, to: ['oncall@example.test'], subject_prefix: '[GH]' },
      ...alerts
    }
  })
}

/** Opens the only server's circuit: it refuses, and the next health check fails. */
async function breakServer (cluster: Cluster, app: { keycloak: { health: { round: () => Promise<void> }, pool: { status: () => Array<{ state: string }> } } }, clock: ManualClock): Promise<void> {
  await cluster.servers[0]?.setMode('refuse')
  clock.advance(31_000)
  await app.keycloak.health.round()
  if (app.keycloak.pool.status()[0]?.state !== 'open') throw new Error('circuit did not open')
}

t.test('circuit_open fires once, repeats only after the interval, resolves once; e-mail and webhook both carry it; a restart does not send it again', async (t) => {
  const cluster = await startCluster(t, 1)
  const mail = await startMailServer(t)
  const hook = await startWebhookReceiver(t)
  const clock = manualClock(Date.parse('2025-03-04T02:00:00Z'))
  const dir = t.testdir()
  const config = alertConfig(dir, cluster, mail, hook.url)
  const first = await startGatehouse({ teardown: () => {} }, config, { clock })
  await first.started
  const ops = first.app.operations
  const server = cluster.servers[0]?.url as string

  t.same(await ops.evaluate(), [], 'all well: nothing sent')
  await breakServer(cluster, first.app, clock)
  t.same(await ops.evaluate(), [], 'open for less than circuit_open_minutes_threshold: nothing yet')
  clock.advance(4 * MINUTE)
  t.same(await ops.evaluate(), [], 'still under five minutes')
  clock.advance(MINUTE + 1000)
  const fired = await ops.evaluate()
  t.same(fired.map((n) => [n.kind, n.key, n.severity]), [['firing', `circuit_open:${server}`, 'critical']], 'fires once the circuit has been open five minutes; critical: no server answers')

  t.equal(mail.messages.length, 1)
  const email = mail.messages[0]
  t.equal(email?.subject, `[GH] FIRING critical: Keycloak circuit open for 5 min: ${server}`)
  t.same(email?.to, ['oncall@example.test'])
  t.equal(email?.from, 'gatehouse@example.test')
  t.match(email?.text, `last error: refused`)
  t.match(email?.text, 'firing since: 2025-03-04 02:05:32 UTC')
  t.match(email?.text, 'What to do: No Keycloak server answers')
  t.equal(hook.received.length, 1)
  const payload = hook.received[0]?.body as { text: string, attachments: Array<{ color: string, fields: Array<{ title: string, value: string }> }>, gatehouse: Record<string, unknown> }
  t.equal(hook.received[0]?.headers['content-type'], 'application/json')
  t.equal(payload.text, `FIRING critical: Keycloak circuit open for 5 min: ${server}`, 'Slack shows `text`')
  t.equal(payload.attachments[0]?.color, '#cf222e')
  t.match(payload.gatehouse, { type: 'alert', alert: 'circuit_open', key: `circuit_open:${server}`, state: 'firing', repeat: false, severity: 'critical' })

  clock.advance(10 * MINUTE)
  t.same(await ops.evaluate(), [], 'still open ten minutes later: not sent again inside the repeat interval')
  t.equal(mail.messages.length, 1)

  // A deploy: the process stops while the alert fires; the new one knows it was sent.
  await first.stop()
  const second = await startGatehouse(t, config, { clock })
  await second.started
  await second.app.keycloak.health.round()
  t.same(await second.app.operations.evaluate(), [], 'after the restart: still firing (its state is in SQLite), nothing sent again')
  t.equal(mail.messages.length, 1)
  t.equal(hook.received.length, 1)
  const status = await (await fetch(`${second.adminUrl}/status`)).json() as { alerts: { firing: Array<{ key: string, since: string }> } }
  t.same(status.alerts.firing.map((f) => [f.key, f.since]), [[`circuit_open:${server}`, '2025-03-04T02:05:32.000Z']], '/status lists it, since its first firing')

  clock.advance(20 * MINUTE + 1000)
  await second.app.keycloak.health.round()
  const repeated = await second.app.operations.evaluate()
  t.same(repeated.map((n) => n.kind), ['repeat'], 'sent again once the repeat interval has passed')
  t.equal(mail.messages.length, 2)
  t.match(mail.messages[1]?.subject, '[GH] STILL FIRING critical: Keycloak circuit open')
  t.equal((hook.received[1]?.body.gatehouse as { repeat: boolean }).repeat, true)

  await cluster.servers[0]?.setMode('pass')
  clock.advance(61_000)
  await second.app.keycloak.health.round()
  t.equal(second.app.keycloak.pool.status()[0]?.state, 'closed', 'the probe closed it')
  const resolved = await second.app.operations.evaluate()
  t.same(resolved.map((n) => n.kind), ['resolved'])
  t.equal(mail.messages.length, 3)
  t.equal(mail.messages[2]?.subject, `[GH] RESOLVED: Keycloak server ${server} answers again`)
  t.match(hook.received[2]?.body, { text: `RESOLVED: Keycloak server ${server} answers again`, gatehouse: { state: 'resolved' } })
  t.same(await second.app.operations.evaluate(), [], 'resolved once')
  clock.advance(60 * MINUTE)
  t.same(await second.app.operations.evaluate(), [], 'and never again')
  t.equal(mail.messages.length, 3)
  const metrics = await (await fetch(`${second.adminUrl}/metrics`)).text()
  t.match(metrics, /^gatehouse_alert_notifications_total\{channel="email",result="sent"\} 2$/m, 'this process sent two e-mails')
  t.match(metrics, /^gatehouse_alerts_firing\{alert="circuit_open"\} 0$/m)
})

t.test('sync_queue warns, escalates to critical, and resolves; sync_failures counts the last hour', async (t) => {
  const cluster = await startCluster(t, 1)
  const mail = await startMailServer(t)
  const hook = await startWebhookReceiver(t)
  const clock = manualClock(Date.parse('2025-03-04T02:00:00Z'))
  const config = alertConfig(t.testdir(), cluster, mail, hook.url, { sync_queue_warning_threshold: 2, sync_queue_critical_threshold: 4, failed_sync_threshold: 1 })
  const gatehouse = await startGatehouse(t, config, { clock })
  await gatehouse.started
  const ops = gatehouse.app.operations
  const queue = new SyncQueueRepository(gatehouse.db, new KeyRing(TEST_SECRETS.encryption_keys))
  const add = (user: string): string => queue.enqueue({ username: user, operation: 'user_disable', payload: { keycloak_id: null } }, clock.now())

  for (const u of ['a', 'b']) add(u)
  t.same(await ops.evaluate(), [], 'two items: at the warning threshold, not above it')
  add('c')
  t.same((await ops.evaluate()).map((n) => [n.kind, n.key, n.severity]), [['firing', 'sync_queue', 'warning']])
  add('d'); add('e')
  t.same((await ops.evaluate()).map((n) => [n.kind, n.severity]), [['firing', 'critical']], 'a change of severity is sent at once')
  t.match(mail.messages.at(-1)?.subject, '[GH] FIRING critical: Sync queue holds 5 unfinished items (threshold 4)')

  // Two items fail: more than failed_sync_threshold in the last hour.
  const claimed = queue.claim('test', clock.now(), 2, 60_000)
  for (const item of claimed) queue.fail(item.id, 'test', 'keycloak said 400', clock.now(), { dead: true })
  t.same((await ops.evaluate()).map((n) => [n.kind, n.key, n.severity]), [['firing', 'sync_queue', 'warning'], ['firing', 'sync_failures', 'warning']],
    'two died: sync_failures fires, and the queue, down to three, is a warning again (a change of severity is news too)')
  clock.advance(61 * MINUTE)
  const later = await ops.evaluate()
  t.same(later.map((n) => [n.kind, n.key]).sort(), [['repeat', 'sync_queue'], ['resolved', 'sync_failures']], 'an hour later the failures are old; the queue is due for a repeat')
  t.equal(later.find((n) => n.key === 'sync_queue')?.severity, 'warning', 'three left: a warning again')
  for (const item of queue.claim('test', clock.now(), 10, 60_000)) queue.complete(item.id, 'test', clock.now())
  t.same((await ops.evaluate()).map((n) => [n.kind, n.key]), [['resolved', 'sync_queue']])
})

t.test('a disabled channel sends nothing; the alert is still recorded and shown', async (t) => {
  const cluster = await startCluster(t, 1)
  const mail = await startMailServer(t)
  const hook = await startWebhookReceiver(t)
  const clock = manualClock()
  const config = alertConfig(t.testdir(), cluster, mail, hook.url, { webhook: { enabled: false, url: hook.url }, email: { enabled: false, to: ['oncall@example.test'] } })
  const gatehouse = await startGatehouse(t, config, { clock })
  await gatehouse.started
  await breakServer(cluster, gatehouse.app, clock)
  clock.advance(6 * MINUTE)
  const sent = await gatehouse.app.operations.evaluate()
  t.same(sent.map((n) => n.kind), ['firing'], 'it fires')
  t.equal(mail.messages.length, 0, 'no e-mail')
  t.equal(hook.received.length, 0, 'no webhook call')
  const html = await (await fetch(`${gatehouse.adminUrl}/status.html`)).text()
  t.match(html, 'CRITICAL</span> Keycloak circuit open for 6 min')
  t.match(html, 'No channel is enabled: alerts are only shown here.')
})

t.test('a failing webhook is logged and counted, never retried in a storm; e-mail still goes', async (t) => {
  const cluster = await startCluster(t, 1)
  const mail = await startMailServer(t)
  const hook = await startWebhookReceiver(t)
  hook.status = 500
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, alertConfig(t.testdir(), cluster, mail, hook.url), { clock })
  await gatehouse.started
  await breakServer(cluster, gatehouse.app, clock)
  clock.advance(6 * MINUTE)
  await gatehouse.app.operations.evaluate()
  t.equal(hook.received.length, 1, 'tried once')
  t.equal(mail.messages.length, 1, 'the e-mail went')
  clock.advance(MINUTE)
  await gatehouse.app.operations.evaluate()
  t.equal(hook.received.length, 1, 'not retried at the next evaluation')
  const line = gatehouse.log.entries().find((e) => e.msg === 'alert notification failed')
  t.match(line, { level: 40, channel: 'webhook', reason: 'the webhook answered 500' })
  t.notMatch(gatehouse.log.text(), '/services/T000', 'the webhook URL (its secret) is never logged')
  t.match(await (await fetch(`${gatehouse.adminUrl}/metrics`)).text(), /^gatehouse_alert_notifications_total\{channel="webhook",result="failed"\} 1$/m)
})

t.test('the daily digest goes once at daily_digest_time, not at the first start, not twice after a restart', async (t) => {
  const cluster = await startCluster(t, 1)
  const mail = await startMailServer(t)
  const hook = await startWebhookReceiver(t)
  const clock = manualClock(Date.parse('2025-03-04T06:30:00Z'))
  // 08:00 in Berlin is 07:00 UTC in March (CET, UTC+1).
  const config = alertConfig(t.testdir(), cluster, mail, hook.url, { daily_digest_time: '08:00', timezone: 'Europe/Berlin' })
  const first = await startGatehouse({ teardown: () => {} }, config, { clock })
  await first.started
  t.equal(await first.app.operations.digest(), null, 'the first start records yesterday\'s digest as done')
  clock.set(Date.parse('2025-03-04T06:59:59Z'))
  t.equal(await first.app.operations.digest(), null, 'not yet 08:00 in Berlin')
  clock.set(Date.parse('2025-03-04T07:00:30Z'))
  const digest = await first.app.operations.digest()
  t.equal(digest?.for, Date.parse('2025-03-04T07:00:00Z'))
  t.equal(mail.messages.length, 1)
  t.match(mail.messages[0]?.subject, /^\[GH\] Daily digest: mode normal, 0 alerts firing, 0 logins$/)
  t.match(mail.messages[0]?.text, 'Gatehouse daily digest for')
  t.match(mail.messages[0]?.text, '2025-03-04 07:00:00 UTC (08:00 Europe/Berlin)')
  t.match(mail.messages[0]?.text, 'Sync queue:\n  0 pending, 0 failed, 0 dead; oldest none')
  t.match(hook.received[0]?.body, { gatehouse: { type: 'digest', for: '2025-03-04T07:00:00.000Z' } })
  t.equal(await first.app.operations.digest(), null, 'sent once')
  await first.stop()

  const second = await startGatehouse(t, config, { clock })
  await second.started
  clock.advance(MINUTE)
  t.equal(await second.app.operations.digest(), null, 'a restart the same morning sends nothing')
  clock.set(Date.parse('2025-03-05T07:00:00Z'))
  t.not(await second.app.operations.digest(), null, 'the next day\'s goes')
  t.equal(mail.messages.length, 2)
})

t.test('token_refresh_failures: held until 15 minutes are covered, fires once above the rate, repeats only after the interval, resolves once', async (t) => {
  const cluster = await startCluster(t, 1)
  const mail = await startMailServer(t)
  const hook = await startWebhookReceiver(t)
  const clock = manualClock(Date.parse('2025-03-04T02:00:00Z'))
  const config = alertConfig(t.testdir(), cluster, mail, hook.url, { token_refresh_failure_rate_threshold: 0.2, token_refresh_min_attempts: 20 })
  const gatehouse = await startGatehouse(t, config, { clock })
  await gatehouse.started
  const ops = gatehouse.app.operations
  // Refreshes are counted by the session service into this counter (src/session/service.ts), and
  // the alert reads its increase over 15 minutes from the operations history; the test counts
  // into it directly, as thirty sessions refreshing through a failing Keycloak would.
  const refreshes = gatehouse.app.metrics.tokenRefresh
  const count = (result: string, n: number): void => { for (let i = 0; i < n; i++) refreshes.inc({ result }) }
  const subjects = (): string[] => mail.messages.map((m) => m.subject ?? '')

  t.same(await ops.evaluate(), [], 'nothing yet')
  count('invalid_grant', 10)
  clock.advance(MINUTE)
  t.same(await ops.evaluate(), [], '10 of 10 failed, but fewer than token_refresh_min_attempts: not judged')
  count('success', 8)
  count('no_refresh_token', 500)
  clock.advance(MINUTE)
  t.same(await ops.evaluate(), [], '18 refreshes: still too few (sessions without a refresh token are not counted)')
  count('success', 2)
  clock.advance(MINUTE)
  const fired = await ops.evaluate()
  t.same(fired.map((n) => [n.kind, n.key, n.severity]), [['firing', 'token_refresh_failures', 'warning']], '10 of 20 failed: fires')
  t.equal(subjects().at(-1), '[GH] FIRING warning: 50% of token refreshes failed in the last 15 minutes (10 of 20)')
  t.equal(mail.messages.length, 1)
  t.equal(hook.received.length, 1)
  t.match(hook.received[0]?.body, { gatehouse: { alert: 'token_refresh_failures', state: 'firing' } })

  count('invalid_grant', 10)
  clock.advance(10 * MINUTE)
  t.same(await ops.evaluate(), [], 'still failing ten minutes later: inside the repeat interval, nothing sent')
  count('invalid_grant', 10)
  count('success', 10)
  clock.advance(21 * MINUTE)
  t.same((await ops.evaluate()).map((n) => n.kind), ['repeat'], 'still half failing over the last 15 minutes: sent again after the 30-minute repeat interval')
  t.equal(subjects().at(-1), '[GH] STILL FIRING warning: 50% of token refreshes failed in the last 15 minutes (10 of 20)')

  count('success', 100)
  clock.advance(16 * MINUTE)
  const resolved = await ops.evaluate()
  t.same(resolved.map((n) => n.kind), ['resolved'], 'only successes over the last 15 minutes: resolved')
  t.equal(subjects().at(-1), '[GH] RESOLVED: Token refresh failures back to 0% (0 of 100)')
  clock.advance(MINUTE)
  t.same(await ops.evaluate(), [], 'resolved once')
  t.equal(mail.messages.length, 3)
  t.equal(hook.received.length, 3)
})

t.test('service tokens: expiring within expiry_warning_days and a previous token used near the end of its grace fire once, repeat after the interval, resolve once', async (t) => {
  const DAY = 24 * 60 * MINUTE
  const cluster = await startCluster(t, 1)
  const mail = await startMailServer(t)
  const hook = await startWebhookReceiver(t)
  const clock = manualClock(Date.parse('2025-03-04T02:00:00Z'))
  const gatehouse = await startGatehouse(t, alertConfig(t.testdir(), cluster, mail, hook.url), { clock })
  await gatehouse.started
  const { operations: ops, serviceTokens } = gatehouse.app
  const keys = (sent: Array<{ kind: string, key: string }>): string[][] => sent.map((n) => [n.kind, n.key]).filter(([, key]) => key?.startsWith('service_token_'))

  const { token: old } = await serviceTokens.create({ name: 'nightly', roles: ['reports'], expiresDays: 20, via: 'test' })
  await serviceTokens.create({ name: 'steady', roles: ['reports'], expiresDays: 90, via: 'test' })
  t.same(keys(await ops.evaluate()), [], '20 days left: nothing')
  clock.advance(6 * DAY + 1000)
  const fired = await ops.evaluate()
  t.same(keys(fired), [['firing', 'service_token_expiring:nightly']], 'under 14 days left: fires, for that token only')
  const body = hook.received.at(-1)?.body as { text: string, gatehouse: Record<string, unknown> }
  t.equal(body.text, 'FIRING warning: Service token nightly expires in 13 days')
  t.match(body.gatehouse, { alert: 'service_token_expiring', key: 'service_token_expiring:nightly', state: 'firing', repeat: false })
  t.match(mail.messages.at(-1)?.subject, '[GH] FIRING warning: Service token nightly expires in 13 days')
  t.same(keys(await ops.evaluate()), [], 'evaluated again: not sent twice')
  clock.advance(30 * MINUTE)
  t.same(keys(await ops.evaluate()), [['repeat', 'service_token_expiring:nightly']], 'again after repeat_interval_minutes')

  // Rotated with two days of grace: the new token has a whole lifetime, so the expiry alert
  // resolves; the old one, still used with under grace_warning_hours left, raises the grace alert.
  await serviceTokens.rotate('nightly', { graceDays: 2, via: 'test' })
  t.same(keys(await ops.evaluate()), [['resolved', 'service_token_expiring:nightly']], 'resolved by the rotation')
  t.match(hook.received.at(-1)?.body, { text: 'RESOLVED: Service token nightly no longer expires soon', gatehouse: { state: 'resolved' } })
  clock.advance(DAY + 2 * 60 * MINUTE)
  t.same(keys(await ops.evaluate()), [], 'the previous token not used since the rotation: nothing')
  const used = await fetch(`${gatehouse.proxyUrl}/hello`, { headers: { authorization: `Bearer ${old}` } })
  t.equal(used.status, 200, 'a client still sends the previous token')
  const grace = await ops.evaluate()
  t.same(keys(grace), [['firing', 'service_token_grace:nightly']])
  t.equal((hook.received.at(-1)?.body as { text: string }).text, 'FIRING warning: The previous token of nightly is still in use; its grace period ends in 22 h')
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /^gatehouse_alerts_firing\{alert="service_token_grace"\} 1$/m)
  t.match(metrics, /^gatehouse_service_token_grace_end_timestamp_seconds\{name="nightly"\} \d+$/m)
  t.match(metrics, /^gatehouse_service_token_previous_last_used_timestamp_seconds\{name="nightly"\} \d+$/m)
  const status = await (await fetch(`${gatehouse.adminUrl}/status`)).json() as { alerts: { firing: Array<{ key: string }> } }
  t.ok(status.alerts.firing.some((f) => f.key === 'service_token_grace:nightly'), '/status lists it')

  await serviceTokens.revoke('nightly', { previousOnly: true, via: 'test' })
  t.same(keys(await ops.evaluate()), [['resolved', 'service_token_grace:nightly']], 'the previous token revoked: resolved once')
  clock.advance(60 * MINUTE)
  t.same(keys(await ops.evaluate()), [], 'and never again')
})
