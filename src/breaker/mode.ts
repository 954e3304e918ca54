import type { Logger } from 'pino'
import type { MODES } from '../metrics/registry.ts'

/** How Gatehouse is deciding right now (DESIGN §1). */
export type Mode = typeof MODES[number]

/** What the mode is computed from. */
export interface ModeInputs {
  /** Some server's circuit is closed and its last call succeeded. */
  keycloakReachable: () => boolean
  /** Cached Keycloak material still inside its grace period (a young enough JWKS; later, session tokens). */
  cachedCredentialsUsable: () => boolean
}

/**
 * Whether cached Keycloak material is still usable while Keycloak is away: the stored JWKS
 * inside the grace period (bearer tokens stay verifiable), or some session's cached tokens.
 * The token count is read only when the JWKS alone does not settle it.
 */
export function cachedMaterialUsable (jwksAgeSeconds: number | null, gracePeriodMs: number, usableSessionTokens: () => number): boolean {
  return (jwksAgeSeconds !== null && jwksAgeSeconds * 1000 < gracePeriodMs) || usableSessionTokens() > 0
}

/**
 * `normal` while Keycloak is reachable; `degraded` while it is not but cached Keycloak
 * material is still usable; `offline` when only local authentication is left.
 */
export function computeMode (inputs: ModeInputs): Mode {
  if (inputs.keycloakReachable()) return 'normal'
  return inputs.cachedCredentialsUsable() ? 'degraded' : 'offline'
}

/**
 * Holds the mode and logs each change once, at warn. `settle()` marks the end of start-up
 * (the first round of health checks): before it, the mode is reported but changes are not
 * logged, so an ordinary start does not announce a recovery.
 */
export class ModeTracker {
  readonly #inputs: ModeInputs
  readonly #log: Logger
  #mode: Mode
  #settled = false
  readonly #listeners: Array<(from: Mode, to: Mode) => void> = []

  constructor (inputs: ModeInputs, log: Logger) {
    this.#inputs = inputs
    this.#log = log
    this.#mode = computeMode(inputs)
  }

  /** The mode in force, re-evaluated now. */
  get mode (): Mode {
    this.evaluate()
    return this.#mode
  }

  /** Re-computes the mode; logs and notifies when it changed. */
  evaluate (): void {
    const next = computeMode(this.#inputs)
    if (next === this.#mode) return
    const from = this.#mode
    this.#mode = next
    if (this.#settled) this.#log.warn({ from, to: next }, `mode changed from ${from} to ${next}`)
    for (const listener of this.#listeners) listener(from, next)
  }

  /** Start-up is over: from now on every change is logged. Logs the mode once, at info. */
  settle (): void {
    this.evaluate()
    if (!this.#settled) this.#log.info({ mode: this.#mode }, `mode is ${this.#mode}`)
    this.#settled = true
  }

  /** Registers a listener for mode changes. */
  onChange (listener: (from: Mode, to: Mode) => void): void {
    this.#listeners.push(listener)
  }
}
