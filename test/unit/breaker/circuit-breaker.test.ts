import t from 'tap'
import { CircuitBreaker, type Transition } from '../../../src/breaker/circuit-breaker.ts'
import { manualClock } from '../../fixtures/clock.ts'

function breaker (options: { threshold?: number, cooldownMs?: number, enabled?: boolean } = {}) {
  const clock = manualClock(0)
  const transitions: Transition[] = []
  const b = new CircuitBreaker({ failureThreshold: options.threshold ?? 3, cooldownMs: options.cooldownMs ?? 60_000, enabled: options.enabled ?? true, clock, onTransition: (tr) => transitions.push(tr) })
  return { b, clock, transitions }
}

t.test('closed until failure_threshold consecutive failures, then open and refusing', async (t) => {
  const { b, transitions } = breaker()
  b.failure('timeout', 'slow')
  b.failure('refused', 'down')
  t.equal(b.state, 'closed')
  t.equal(b.acquire(true), 'call')
  b.failure('http_5xx', '503')
  t.equal(b.state, 'open')
  t.equal(b.acquire(false), 'refuse')
  t.equal(b.acquire(true), 'refuse', 'no probe before the cooldown')
  t.same(transitions, [{ from: 'closed', to: 'open', failures: 3, kind: 'http_5xx' }])
  t.match(b.snapshot(), { state: 'open', consecutiveFailures: 3, lastErrorKind: 'http_5xx', lastError: '503', openedAt: 0, probeAfter: 60_000 })
})

t.test('a success in between resets the count: flapping below the threshold never opens', async (t) => {
  const { b } = breaker()
  for (let i = 0; i < 10; i++) {
    b.failure('reset', 'x')
    b.failure('reset', 'x')
    b.success()
  }
  t.equal(b.state, 'closed')
  t.equal(b.snapshot().consecutiveFailures, 0)
})

t.test('after the cooldown exactly one probe is let through; its success closes the circuit', async (t) => {
  const { b, clock, transitions } = breaker({ threshold: 1, cooldownMs: 1000 })
  b.failure('timeout', 'x')
  clock.advance(999)
  t.equal(b.acquire(true), 'refuse')
  clock.advance(1)
  t.equal(b.acquire(false), 'refuse', 'user traffic never probes')
  t.equal(b.acquire(true), 'probe')
  t.equal(b.state, 'half_open')
  t.equal(b.acquire(true), 'refuse', 'only one probe at a time')
  b.success()
  t.equal(b.state, 'closed')
  t.equal(b.acquire(false), 'call')
  t.same(transitions.map((tr) => tr.to), ['open', 'half_open', 'closed'])
})

t.test('a failed probe re-opens the circuit for a whole new cooldown', async (t) => {
  const { b, clock } = breaker({ threshold: 2, cooldownMs: 1000 })
  b.failure('timeout', 'x')
  b.failure('timeout', 'x')
  clock.advance(1000)
  t.equal(b.acquire(true), 'probe')
  b.failure('refused', 'still down')
  t.equal(b.state, 'open')
  t.equal(b.snapshot().probeAfter, 2000)
  clock.advance(999)
  t.equal(b.acquire(true), 'refuse')
  clock.advance(1)
  t.equal(b.acquire(true), 'probe')
})

t.test('with resilience disabled failures are counted but the circuit never opens', async (t) => {
  const { b } = breaker({ threshold: 1, enabled: false })
  for (let i = 0; i < 5; i++) b.failure('timeout', 'x')
  t.equal(b.state, 'closed')
  t.equal(b.snapshot().consecutiveFailures, 5)
  t.equal(b.acquire(false), 'call')
})

t.test('bad options are a TypeError at construction', async (t) => {
  const clock = manualClock(0)
  t.throws(() => new CircuitBreaker({ failureThreshold: 0, cooldownMs: 1, clock }), TypeError)
  t.throws(() => new CircuitBreaker({ failureThreshold: 1, cooldownMs: -1, clock }), TypeError)
})
