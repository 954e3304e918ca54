import t from 'tap'
import { History } from '../../../src/admin/history.ts'
import { circuitBadge, duration } from '../../../src/admin/status-page.ts'
import { manualClock } from '../../fixtures/clock.ts'
import type { ServerStatus } from '../../../src/keycloak/failover.ts'

const MINUTE = 60_000
const server = (state: ServerStatus['state'], over: Partial<ServerStatus> = {}): ServerStatus => ({
  server: 'http://kc', priority: 1, weight: 100, state, consecutiveFailures: state === 'closed' ? 0 : 3, lastFailureAt: null, lastErrorKind: null, lastError: null, lastSuccessAt: 1, openedAt: null, probeAfter: null, ...over
})

t.test('the history keeps the worst health of each minute, and counter increases per minute, for an hour', async (t) => {
  const clock = manualClock(Date.parse('2025-01-01T10:00:10Z'))
  const h = new History({ clock })
  h.observeCircuits([server('closed')])
  h.recordCounters(new Map([['decision:allow', 5]]))
  clock.advance(MINUTE)
  h.observeCircuits([server('open', { openedAt: clock.now() })])
  h.observeCircuits([server('half_open')])
  h.recordCounters(new Map([['decision:allow', 12]]))
  t.equal(h.unhealthySince('http://kc'), clock.now(), 'since the circuit first left closed')
  clock.advance(2 * MINUTE)
  h.observeCircuits([server('open', { openedAt: clock.now() })])
  t.equal(h.unhealthySince('http://kc'), clock.now() - 2 * MINUTE, 'a re-opening after a failed probe does not restart the clock')
  h.observeCircuits([server('closed')])
  t.equal(h.unhealthySince('http://kc'), null)
  const timeline = h.circuitTimeline('http://kc')
  t.equal(timeline.length, 60)
  t.same(timeline.slice(-4), ['closed', 'open', null, 'open'], 'the minute it opened shows open (worse than half-open); a minute without observations has no data')
  const allow = h.counterSeries('decision:allow')
  t.same(allow.slice(-4), [5, 7, 0, 0])
  t.equal(h.increase('decision:allow', 60 * MINUTE), 12)
  t.equal(h.increase('decision:allow', 2 * MINUTE), 7, 'at minute resolution: the minute it grew in starts the span')
  t.equal(h.increase('decision:allow', MINUTE), 0, 'nothing in the last minute')
  clock.advance(61 * MINUTE)
  h.observeCircuits([server('closed')])
  t.same(h.circuitTimeline('http://kc').filter((x) => x !== null), ['closed'], 'an hour later only the new minute is left')
})

t.test('a circuit is never shown as a green closed while it fails', async (t) => {
  t.same(circuitBadge({ state: 'closed', consecutive_failures: 2, last_success_at: null, last_failure_at: 'x' }), { text: 'closed, failing (2 in a row)', tone: 'warn' })
  t.same(circuitBadge({ state: 'closed', consecutive_failures: 0, last_success_at: null, last_failure_at: null }), { text: 'not checked yet', tone: 'idle' })
  t.same(circuitBadge({ state: 'closed', consecutive_failures: 0, last_success_at: 'x', last_failure_at: null }), { text: 'closed', tone: 'ok' })
  t.same(circuitBadge({ state: 'open', consecutive_failures: 3, last_success_at: 'x', last_failure_at: 'x' }), { text: 'open', tone: 'bad' })
  t.same([45, 200, 3600, 7500, 90000].map(duration), ['45 s', '3 min 20 s', '1 h', '2 h 5 min', '1 d 1 h'])
})
