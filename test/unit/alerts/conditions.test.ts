import t from 'tap'
import { Value } from '@sinclair/typebox/value'
import { evaluateConditions, type AlertInputs } from '../../../src/alerts/conditions.ts'
import { latestOccurrence, zoneOffsetMs } from '../../../src/alerts/schedule.ts'
import { formatTime } from '../../../src/alerts/messages.ts'
import { AlertsSchema, type Config } from '../../../src/config/schema.ts'

const thresholds = Value.Default(AlertsSchema, {}) as Config['alerts']
const NOW = Date.parse('2025-06-01T12:00:00Z')
const base: AlertInputs = { now: NOW, circuits: [], syncUnfinished: null, syncOldestSeconds: null, syncFailedLastHour: null, refresh: { attempts: 0, failures: 0 }, refreshWindowCovered: true, serviceTokens: null }
const only = (inputs: Partial<AlertInputs>, alert: string) => evaluateConditions({ ...base, ...inputs }, thresholds).filter((o) => o.alert === alert)

t.test('token refresh failures: judged only with enough refreshes; held while the window is not covered yet', async (t) => {
  t.equal(thresholds.token_refresh_failure_rate_threshold, 0.2)
  t.equal(thresholds.token_refresh_min_attempts, 20)
  t.match(only({ refresh: { attempts: 20, failures: 5 } }, 'token_refresh_failures'), [{ status: 'firing', summary: '25% of token refreshes failed in the last 15 minutes (5 of 20)' }])
  t.match(only({ refresh: { attempts: 20, failures: 4 } }, 'token_refresh_failures'), [{ status: 'clear' }], 'exactly the threshold is not above it')
  t.match(only({ refresh: { attempts: 19, failures: 19 } }, 'token_refresh_failures'), [{ status: 'clear' }], 'too few refreshes to judge, over a whole window: clear')
  t.match(only({ refresh: { attempts: 3, failures: 3 }, refreshWindowCovered: false }, 'token_refresh_failures'), [{ status: 'hold' }], 'just after a start: neither fires nor resolves')
})

t.test('circuit_open: fires after the threshold, is held while unknown, clears only on a success', async (t) => {
  const circuit = { server: 'http://kc-1', state: 'open' as const, consecutiveFailures: 3, lastSuccessAt: NOW - 3_600_000, lastErrorKind: 'timeout', lastError: 'keycloak did not answer', unhealthySince: NOW - 5 * 60_000 }
  t.match(only({ circuits: [circuit] }, 'circuit_open'), [{ key: 'circuit_open:http://kc-1', status: 'firing', severity: 'critical', summary: 'Keycloak circuit open for 5 min: http://kc-1' }])
  t.match(only({ circuits: [{ ...circuit, unhealthySince: NOW - 4 * 60_000 }] }, 'circuit_open'), [{ status: 'hold' }])
  const healthy = { ...circuit, server: 'http://kc-2', state: 'closed' as const, consecutiveFailures: 0, unhealthySince: null }
  t.match(only({ circuits: [circuit, healthy] }, 'circuit_open'), [{ status: 'firing', severity: 'warning' }, { status: 'clear' }], 'warning while another server answers')
  t.match(only({ circuits: [{ ...healthy, lastSuccessAt: null }] }, 'circuit_open'), [{ status: 'hold' }], 'closed but never heard from (a restart): held')
  t.match(only({ circuits: [{ ...healthy, consecutiveFailures: 1 }] }, 'circuit_open'), [{ status: 'hold' }], 'closed and failing: held')
})

t.test('sync queue and failures: strictly above the thresholds', async (t) => {
  t.match(only({ syncUnfinished: 100 }, 'sync_queue'), [{ status: 'clear' }])
  t.match(only({ syncUnfinished: 101 }, 'sync_queue'), [{ status: 'firing', severity: 'warning' }])
  t.match(only({ syncUnfinished: 1001 }, 'sync_queue'), [{ status: 'firing', severity: 'critical' }])
  t.same(only({ syncUnfinished: null }, 'sync_queue'), [], 'no queue (a generic provider): no alert')
  t.match(only({ syncFailedLastHour: 11 }, 'sync_failures'), [{ status: 'firing' }])
  t.match(only({ syncFailedLastHour: 10 }, 'sync_failures'), [{ status: 'clear' }])
})

t.test('the digest schedule in a time zone, across a DST change', async (t) => {
  t.equal(zoneOffsetMs(Date.parse('2025-01-15T12:00:00Z'), 'Europe/Berlin'), 3_600_000)
  t.equal(zoneOffsetMs(Date.parse('2025-07-15T12:00:00Z'), 'Europe/Berlin'), 7_200_000)
  t.equal(latestOccurrence(Date.parse('2025-03-30T05:59:00Z'), '08:00', 'Europe/Berlin'), Date.parse('2025-03-29T07:00:00Z'), 'before 08:00 CEST on the change day: yesterday\'s 08:00 CET')
  t.equal(latestOccurrence(Date.parse('2025-03-30T06:00:00Z'), '08:00', 'Europe/Berlin'), Date.parse('2025-03-30T06:00:00Z'), '08:00 CEST is 06:00 UTC')
  t.equal(latestOccurrence(Date.parse('2025-03-04T23:30:00Z'), '00:15', 'UTC'), Date.parse('2025-03-04T00:15:00Z'))
  t.equal(latestOccurrence(Date.parse('2025-03-04T00:15:00Z'), '00:15', 'UTC'), Date.parse('2025-03-04T00:15:00Z'), 'at the minute itself')
  t.equal(formatTime(Date.parse('2025-07-15T06:00:00Z'), 'Europe/Berlin'), '2025-07-15 06:00:00 UTC (08:00 Europe/Berlin)')
  t.equal(formatTime(Date.parse('2025-07-15T06:00:00Z'), 'UTC'), '2025-07-15 06:00:00 UTC')
})

t.test('service tokens: one expiring and one grace instance per token, firing while the service reports it, clear otherwise', async (t) => {
  t.same(only({}, 'service_token_expiring'), [], 'service tokens off: nothing observed')
  const observed = evaluateConditions({
    ...base,
    serviceTokens: {
      names: ['ci', 'quiet'],
      alerts: [
        { kind: 'expiring', name: 'ci', expires_at: '2025-06-10T12:00:00.000Z', seconds_left: 9 * 86_400, auto_rotate_days: null },
        { kind: 'previous_in_use', name: 'ci', previous_valid_until: '2025-06-01T17:00:00.000Z', seconds_left: 5 * 3600, previous_last_used_at: '2025-06-01T11:59:00.000Z' }
      ]
    }
  }, thresholds).filter((o) => o.alert.startsWith('service_token_'))
  t.same(observed.map((o) => [o.key, o.status, o.severity]), [
    ['service_token_expiring:ci', 'firing', 'warning'],
    ['service_token_grace:ci', 'firing', 'warning'],
    ['service_token_expiring:quiet', 'clear', 'warning'],
    ['service_token_grace:quiet', 'clear', 'warning']
  ])
  t.equal(observed[0]?.summary, 'Service token ci expires in 9 days')
  t.equal(observed[1]?.summary, 'The previous token of ci is still in use; its grace period ends in 5 h')
  t.same(observed[1]?.facts, [['token', 'ci'], ['grace period ends', '2025-06-01T17:00:00.000Z'], ['previous token last used', '2025-06-01T11:59:00.000Z']])
  const auto = only({ serviceTokens: { names: ['bot'], alerts: [{ kind: 'expiring', name: 'bot', expires_at: 'x', seconds_left: 90 * 60, auto_rotate_days: 7 }] } }, 'service_token_expiring')
  t.equal(auto[0]?.summary, 'Service token bot expires in 90 min')
  t.match(auto[0]?.hint, /automatic rotation is overdue/)
})
