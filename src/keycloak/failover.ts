import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import type { Metrics } from '../metrics/registry.ts'
import { CircuitBreaker, type BreakerSnapshot, type Transition } from '../breaker/circuit-breaker.ts'
import type { ProviderLayout } from './provider.ts'
import { createSelector, type Candidate, type Random, type Selector, type Strategy } from './strategy.ts'

/** What a Keycloak call is for: the `operation` label of the latency metric. */
export type KeycloakOperation = 'jwks' | 'discovery' | 'token' | 'refresh' | 'userinfo' | 'logout' | 'introspection' | 'admin' | 'health'

/** One back-channel server as configured. */
export interface ServerSpec {
  /** Base URL (`http://keycloak:8080`, or with `/auth`). */
  url: string
  /** Lower is preferred. Default is 1. */
  priority?: number
  /** Share under round_robin. Default is 100. */
  weight?: number
}

/** The server a call was handed, where things are on it, and the attempt's deadline. */
export interface CallTarget {
  server: string
  /** The discovery document's URL on this server. */
  discovery: string
  /** A URL the provider publishes, moved onto this server (see {@link ProviderLayout.onServer}). */
  backChannel: (publishedUrl: string) => string
  /** Aborts when this attempt's share of the call's deadline has passed. */
  signal: AbortSignal
}

/** What the pool knows of one server, for `/status` and `gatehouse status`. */
export interface ServerStatus extends BreakerSnapshot {
  server: string
  priority: number
  weight: number
}

/** Options for {@link KeycloakPool}. */
export interface PoolOptions {
  servers: ServerSpec[]
  /** Where the provider's URLs are on each server. */
  layout: ProviderLayout
  /** Deadline of one call, failover included, in milliseconds. */
  timeoutMs: number
  /** When false no call is made at all (`feature_flags.keycloak_enabled`). Default is true. */
  enabled?: boolean
  /** Default is `priority`. */
  strategy?: Strategy
  /** Breaker settings shared by every server. */
  breaker: { enabled: boolean, failureThreshold: number, cooldownMs: number }
  clock: Clock
  log: Logger
  metrics: Metrics
  /** Source of randomness for `random`. Default is Math.random. */
  random?: Random
}

interface ServerState extends Candidate {
  server: string
  discovery: string
  breaker: CircuitBreaker
}

/** Listener for anything that may change whether Keycloak is reachable. */
export type PoolListener = () => void

/**
 * Every call to Keycloak goes through here. One deadline covers the whole call: servers with
 * a closed circuit are tried in strategy order, each attempt getting an even share of the
 * time left, so a black-holed primary still leaves time to fail over within the same call.
 * Servers whose circuit is open are never called by user traffic, and when none is closed a
 * call fails at once with no network I/O. Recovery is found by {@link KeycloakPool.probe}
 * (the health monitor's single half-open probe per cooldown).
 */
export class KeycloakPool {
  readonly #servers: ServerState[]
  readonly #timeoutMs: number
  readonly #enabled: boolean
  readonly #selector: Selector
  readonly #strategy: Strategy
  readonly #log: Logger
  readonly #metrics: Metrics
  readonly #listeners: PoolListener[] = []
  readonly #layout: ProviderLayout

  constructor (options: PoolOptions) {
    if (options.servers.length === 0) throw new TypeError('KeycloakPool needs at least one server')
    this.#timeoutMs = options.timeoutMs
    this.#enabled = options.enabled ?? true
    this.#strategy = options.strategy ?? 'priority'
    this.#selector = createSelector(this.#strategy, options.random)
    this.#log = options.log
    this.#metrics = options.metrics
    this.#layout = options.layout
    this.#servers = options.servers.map((spec, index) => {
      const server = spec.url.replace(/\/+$/, '')
      return {
        index,
        server,
        priority: spec.priority ?? 1,
        weight: spec.weight ?? 100,
        discovery: options.layout.discoveryOn(server),
        breaker: new CircuitBreaker({
          failureThreshold: options.breaker.failureThreshold,
          cooldownMs: options.breaker.cooldownMs,
          enabled: options.breaker.enabled,
          clock: options.clock,
          onTransition: (t) => this.#onTransition(server, t)
        })
      }
    })
  }

  /**
   * Runs `fn` against the best healthy server, failing over while time remains. `fn` must
   * pass `target.signal` to its I/O. A {@link KeycloakRejected} answer is final (the server is
   * up); a {@link KeycloakUnavailable} one counts against that server's breaker and moves on.
   */
  async call<T> (operation: KeycloakOperation, fn: (target: CallTarget) => Promise<T>): Promise<T> {
    if (!this.#enabled) throw new KeycloakUnavailable('disabled', 'keycloak is disabled by feature_flags.keycloak_enabled')
    const healthy = this.#servers.filter((s) => s.breaker.state === 'closed')
    if (healthy.length === 0) throw new KeycloakUnavailable('circuit_open', 'every keycloak server is unavailable (circuit open); not calling')
    const ordered = this.#selector.order(healthy) as ServerState[]
    const deadline = performance.now() + this.#timeoutMs
    let lastError: KeycloakUnavailable | undefined
    for (let i = 0; i < ordered.length; i++) {
      const state = ordered[i] as ServerState
      const left = deadline - performance.now()
      if (left <= 0) break
      // Concurrent calls may have opened this circuit since the list was made.
      if (state.breaker.acquire(false) !== 'call') continue
      try {
        return await this.#attempt(state, operation, fn, left / (ordered.length - i))
      } catch (err) {
        if (!(err instanceof KeycloakUnavailable)) throw err
        lastError = err
      }
    }
    throw lastError ?? new KeycloakUnavailable('timeout', 'keycloak did not answer before the deadline')
  }

  /**
   * Calls one server outside user traffic (the health monitor): allowed while its circuit is
   * closed, and as the single half-open probe once an open circuit's cooldown has passed.
   * Resolves to `null` without any I/O when the breaker refuses.
   */
  async probe<T> (server: string, operation: KeycloakOperation, fn: (target: CallTarget) => Promise<T>): Promise<T | null> {
    if (!this.#enabled) return null
    const state = this.#servers.find((s) => s.server === server)
    if (state === undefined || state.breaker.acquire(true) === 'refuse') return null
    return await this.#attempt(state, operation, fn, this.#timeoutMs)
  }

  async #attempt<T> (state: ServerState, operation: KeycloakOperation, fn: (target: CallTarget) => Promise<T>, budgetMs: number): Promise<T> {
    const started = performance.now()
    const signal = AbortSignal.timeout(Math.max(1, Math.floor(budgetMs)))
    try {
      const layout = this.#layout
      const result = await fn({ server: state.server, discovery: state.discovery, backChannel: (url) => layout.onServer(url, state.server), signal })
      this.#observe(state, operation, started, 'success')
      state.breaker.success()
      this.#changed()
      return result
    } catch (err) {
      if (err instanceof KeycloakRejected) {
        // Keycloak answered: the server is up, whatever it said.
        this.#observe(state, operation, started, 'rejected')
        state.breaker.success()
        this.#changed()
        throw err
      }
      const failure = err instanceof KeycloakUnavailable
        ? err
        : new KeycloakUnavailable(signal.aborted ? 'timeout' : 'network', (err as Error).message, { server: state.server, cause: err })
      this.#observe(state, operation, started, failure.kind)
      state.breaker.failure(failure.kind, failure.message)
      this.#log.debug({ server: state.server, operation, kind: failure.kind }, 'keycloak call failed')
      this.#changed()
      throw failure
    }
  }

  /** Each server's breaker state and recent history, in configuration order. */
  status (): ServerStatus[] {
    return this.#servers.map((s) => ({ server: s.server, priority: s.priority, weight: s.weight, ...s.breaker.snapshot() }))
  }

  /**
   * Resets every circuit that is open, half-open or counting failures (see
   * {@link CircuitBreaker.reset}); returns the servers reset. Logged once, at warn.
   */
  resetBreakers (): string[] {
    const reset = this.#servers.filter((s) => s.breaker.reset()).map((s) => s.server)
    if (reset.length > 0) {
      this.#log.warn({ servers: reset }, 'keycloak circuits reset by an operator')
      this.#changed()
    }
    return reset
  }

  /** Server base URLs in configuration order. */
  get servers (): string[] {
    return this.#servers.map((s) => s.server)
  }

  /** Where the provider's URLs are on each server. */
  get layout (): ProviderLayout {
    return this.#layout
  }

  /** Whether calls are made at all. */
  get enabled (): boolean {
    return this.#enabled
  }

  /** `keycloak.ha.strategy` in force. */
  get strategy (): Strategy {
    return this.#strategy
  }

  /**
   * True while some server's circuit is closed and its last call succeeded: the test for
   * mode `normal`. A server not yet heard from does not count.
   */
  reachable (): boolean {
    return this.#enabled && this.#servers.some((s) => {
      const snapshot = s.breaker.snapshot()
      return snapshot.state === 'closed' && snapshot.consecutiveFailures === 0 && snapshot.lastSuccessAt !== null
    })
  }

  /** Registers a listener called after every call's outcome and every breaker transition. */
  onChange (listener: PoolListener): void {
    this.#listeners.push(listener)
  }

  #changed (): void {
    for (const listener of this.#listeners) listener()
  }

  #onTransition (server: string, t: Transition): void {
    this.#metrics.circuitTransitions.inc({ server, to: t.to })
    // Breaker transitions are news: once each, at warn (HOUSE-STYLE §5).
    if (t.to === 'open') this.#log.warn({ server, from: t.from, failures: t.failures, kind: t.kind }, 'keycloak circuit opened; server skipped until its cooldown passes')
    else if (t.to === 'half_open') this.#log.warn({ server }, 'keycloak circuit half-open; probing the server')
    else if (t.kind !== 'reset') this.#log.warn({ server, from: t.from }, 'keycloak circuit closed; server back in use')
  }

  #observe (state: ServerState, operation: KeycloakOperation, started: number, result: string): void {
    this.#metrics.keycloakRequestDuration.observe({ server: state.server, operation, result }, (performance.now() - started) / 1000)
  }
}
