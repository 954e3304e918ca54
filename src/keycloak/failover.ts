import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import type { Metrics } from '../metrics/registry.ts'
import { realmEndpoints, type RealmEndpoints } from './endpoints.ts'

/** What a Keycloak call is for: the `operation` label of the latency metric. */
export type KeycloakOperation = 'jwks' | 'discovery' | 'token' | 'refresh' | 'userinfo' | 'logout' | 'introspection' | 'admin' | 'health'

/** One back-channel server as configured. */
export interface ServerSpec {
  /** Base URL (`http://keycloak:8080`, or with `/auth`). */
  url: string
}

/** The server a call was handed, with its endpoints and the call's deadline. */
export interface CallTarget {
  server: string
  endpoints: RealmEndpoints
  /** Aborts when the call's overall deadline passes. */
  signal: AbortSignal
}

/** What the pool knows of one server, for `/status` and `gatehouse status`. */
export interface ServerStatus {
  server: string
  consecutiveFailures: number
  lastSuccessAt: number | null
  lastFailureAt: number | null
  lastErrorKind: string | null
  lastError: string | null
}

/** Options for {@link KeycloakPool}. */
export interface PoolOptions {
  servers: ServerSpec[]
  realm: string
  /** Deadline of one call, failover included, in milliseconds. */
  timeoutMs: number
  /** When false no call is made at all (`feature_flags.keycloak_enabled`). Default is true. */
  enabled?: boolean
  clock: Clock
  log: Logger
  metrics: Metrics
}

interface ServerState extends ServerStatus {
  endpoints: RealmEndpoints
}

/**
 * Every call to Keycloak goes through here: one deadline for the whole call, errors
 * classified at the boundary, each server's recent history kept for status. Servers are
 * tried in configured order until one answers or the deadline passes.
 */
export class KeycloakPool {
  readonly #servers: ServerState[]
  readonly #timeoutMs: number
  readonly #enabled: boolean
  readonly #clock: Clock
  readonly #log: Logger
  readonly #metrics: Metrics

  constructor (options: PoolOptions) {
    if (options.servers.length === 0) throw new TypeError('KeycloakPool needs at least one server')
    this.#servers = options.servers.map((s) => ({
      server: s.url,
      endpoints: realmEndpoints(s.url, options.realm),
      consecutiveFailures: 0,
      lastSuccessAt: null,
      lastFailureAt: null,
      lastErrorKind: null,
      lastError: null
    }))
    this.#timeoutMs = options.timeoutMs
    this.#enabled = options.enabled ?? true
    this.#clock = options.clock
    this.#log = options.log
    this.#metrics = options.metrics
  }

  /**
   * Runs `fn` against a server under the deadline. `fn` must pass `target.signal` to its
   * I/O. A {@link KeycloakRejected} answer is final (the server is up); a
   * {@link KeycloakUnavailable} one moves on to the next server while time remains.
   */
  async call<T> (operation: KeycloakOperation, fn: (target: CallTarget) => Promise<T>): Promise<T> {
    if (!this.#enabled) throw new KeycloakUnavailable('disabled', 'keycloak is disabled by feature_flags.keycloak_enabled')
    const signal = AbortSignal.timeout(this.#timeoutMs)
    let lastError: KeycloakUnavailable | undefined
    for (const state of this.#servers) {
      const started = performance.now()
      try {
        const result = await fn({ server: state.server, endpoints: state.endpoints, signal })
        this.#recordSuccess(state, operation, started, 'success')
        return result
      } catch (err) {
        if (err instanceof KeycloakRejected) {
          this.#recordSuccess(state, operation, started, 'rejected')
          throw err
        }
        const failure = err instanceof KeycloakUnavailable ? err : new KeycloakUnavailable('network', (err as Error).message, { server: state.server, cause: err })
        this.#recordFailure(state, operation, started, failure)
        lastError = failure
        if (signal.aborted) break
      }
    }
    throw lastError ?? new KeycloakUnavailable('timeout', 'keycloak did not answer before the deadline')
  }

  /** Each server's recent history. */
  status (): ServerStatus[] {
    return this.#servers.map(({ endpoints: _endpoints, ...status }) => ({ ...status }))
  }

  /** Whether calls are made at all. */
  get enabled (): boolean {
    return this.#enabled
  }

  #recordSuccess (state: ServerState, operation: KeycloakOperation, started: number, result: 'success' | 'rejected'): void {
    state.consecutiveFailures = 0
    state.lastSuccessAt = this.#clock.now()
    this.#observe(state, operation, started, result)
  }

  #recordFailure (state: ServerState, operation: KeycloakOperation, started: number, err: KeycloakUnavailable): void {
    state.consecutiveFailures++
    state.lastFailureAt = this.#clock.now()
    state.lastErrorKind = err.kind
    state.lastError = err.message
    this.#observe(state, operation, started, err.kind)
    this.#log.debug({ server: state.server, operation, kind: err.kind }, 'keycloak call failed')
  }

  #observe (state: ServerState, operation: KeycloakOperation, started: number, result: string): void {
    this.#metrics.keycloakRequestDuration.observe({ server: state.server, operation, result }, (performance.now() - started) / 1000)
  }
}
