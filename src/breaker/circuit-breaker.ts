import type { Clock } from '../clock.ts'

/** A breaker's state. `half_open`: the cooldown has passed and one probe is in flight. */
export type CircuitState = 'closed' | 'open' | 'half_open'

/** What a caller may do with the server now. */
export type Permit = 'call' | 'probe' | 'refuse'

/** One state change, for logs and metrics. */
export interface Transition {
  from: CircuitState
  to: CircuitState
  /** Consecutive failures when it happened. */
  failures: number
  /** Error class of the failure that caused it, when one did. */
  kind: string | null
}

/** Options of {@link CircuitBreaker}. */
export interface BreakerOptions {
  /** Consecutive failures that open the circuit. Must be at least 1. */
  failureThreshold: number
  /** Time an open circuit waits before it lets one probe through, in milliseconds. */
  cooldownMs: number
  /** When false the circuit never opens (failures are still counted). Default is true. */
  enabled?: boolean
  clock: Clock
  /** Called on every state change, synchronously. */
  onTransition?: (transition: Transition) => void
}

/** What the breaker remembers, for status reports. */
export interface BreakerSnapshot {
  state: CircuitState
  consecutiveFailures: number
  lastFailureAt: number | null
  lastErrorKind: string | null
  lastError: string | null
  lastSuccessAt: number | null
  openedAt: number | null
  /** When an open circuit will let its probe through. */
  probeAfter: number | null
}

/**
 * One server's circuit breaker (the original system's states and defaults): closed until
 * `failureThreshold` consecutive failures, then open for `cooldownMs`; after that exactly one
 * probe may go through (half-open), and its result closes or re-opens the circuit. Only
 * unavailability counts as failure — a 4xx answer means the server is up. Time comes from the
 * injected clock, so tests move through cooldowns without waiting.
 */
export class CircuitBreaker {
  readonly #options: BreakerOptions
  #state: CircuitState = 'closed'
  #failures = 0
  #openedAt: number | null = null
  #lastFailureAt: number | null = null
  #lastErrorKind: string | null = null
  #lastError: string | null = null
  #lastSuccessAt: number | null = null

  constructor (options: BreakerOptions) {
    if (!Number.isInteger(options.failureThreshold) || options.failureThreshold < 1) {
      throw new TypeError('CircuitBreaker: failureThreshold must be a positive integer')
    }
    if (!(options.cooldownMs >= 0)) throw new TypeError('CircuitBreaker: cooldownMs must be a non-negative number')
    this.#options = options
  }

  /** The state now, without side effects. */
  get state (): CircuitState {
    return this.#state
  }

  /** True when an open circuit's cooldown has passed and no probe is in flight yet. */
  probeDue (): boolean {
    return this.#state === 'open' && this.#openedAt !== null && this.#options.clock.now() - this.#openedAt >= this.#options.cooldownMs
  }

  /**
   * Asks to use the server. `call` while closed; once an open circuit's cooldown has passed,
   * `probe` to exactly one caller (the circuit becomes half-open); `refuse` otherwise. A
   * caller given `call` or `probe` must report `success` or `failure`.
   */
  acquire (allowProbe: boolean): Permit {
    if (this.#state === 'closed') return 'call'
    if (allowProbe && this.probeDue()) {
      this.#move('half_open', null)
      return 'probe'
    }
    return 'refuse'
  }

  /** The server answered (a 2xx, or a 4xx: it is up and said no). */
  success (): void {
    this.#failures = 0
    this.#lastSuccessAt = this.#options.clock.now()
    if (this.#state !== 'closed') {
      this.#openedAt = null
      this.#move('closed', null)
    }
  }

  /** The server could not be reached, timed out, or answered 5xx. */
  failure (kind: string, message: string): void {
    const now = this.#options.clock.now()
    this.#failures++
    this.#lastFailureAt = now
    this.#lastErrorKind = kind
    this.#lastError = message
    if (this.#options.enabled === false) return
    if (this.#state === 'half_open' || (this.#state === 'closed' && this.#failures >= this.#options.failureThreshold)) {
      this.#openedAt = now
      this.#move('open', kind)
    }
  }

  /**
   * Closes the circuit and forgets its failures, by an operator's hand (`gatehouse doctor
   * fix`): the next call tests the server, and `failureThreshold` failures open it again.
   * Returns whether there was anything to reset.
   */
  reset (): boolean {
    if (this.#state === 'closed' && this.#failures === 0) return false
    this.#failures = 0
    this.#openedAt = null
    if (this.#state !== 'closed') this.#move('closed', 'reset')
    return true
  }

  /** What the breaker remembers. */
  snapshot (): BreakerSnapshot {
    return {
      state: this.#state,
      consecutiveFailures: this.#failures,
      lastFailureAt: this.#lastFailureAt,
      lastErrorKind: this.#lastErrorKind,
      lastError: this.#lastError,
      lastSuccessAt: this.#lastSuccessAt,
      openedAt: this.#openedAt,
      probeAfter: this.#state === 'open' && this.#openedAt !== null ? this.#openedAt + this.#options.cooldownMs : null
    }
  }

  #move (to: CircuitState, kind: string | null): void {
    const from = this.#state
    this.#state = to
    this.#options.onTransition?.({ from, to, failures: this.#failures, kind })
  }
}
