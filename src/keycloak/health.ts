import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { KeycloakPool, ServerStatus } from './failover.ts'
import { fetchDiscovery, type ProviderMetadata } from './metadata.ts'

/** Options of {@link HealthMonitor}. */
export interface HealthOptions {
  pool: KeycloakPool
  metadata: ProviderMetadata
  clock: Clock
  log: Logger
  /** A server heard from more recently than this is not checked, in milliseconds. */
  cacheMs: number
  /** How often due checks are looked for, in milliseconds. Default is 1000. */
  tickMs?: number
  /** Called after every round (the mode is re-evaluated there). */
  afterRound?: () => void
}

/**
 * Health checks of every Keycloak server, in the background. A server with a closed circuit
 * that has not been heard from (by any call) for `cacheMs` is checked, so an idle backup's
 * death is known before traffic needs it; an open circuit whose cooldown has passed gets its
 * single half-open probe here, so recovery is found without user traffic ever paying for it.
 * A check is a GET of the realm's discovery document, which is also kept as metadata.
 */
export class HealthMonitor {
  readonly #options: HealthOptions
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null

  constructor (options: HealthOptions) {
    this.#options = options
  }

  /** Runs the first round now (not awaited by start-up) and then checks every tick. */
  start (): Promise<void> {
    const first = this.round()
    this.#timer = setInterval(() => { void this.round() }, this.#options.tickMs ?? 1000)
    this.#timer.unref()
    return first
  }

  /** Stops the background checks. */
  stop (): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  /** Checks every server that is due, in parallel; a round already running is joined. */
  round (): Promise<void> {
    this.#running ??= this.#round().finally(() => { this.#running = null })
    return this.#running
  }

  async #round (): Promise<void> {
    const { pool, metadata, log } = this.#options
    const now = this.#options.clock.now()
    await Promise.all(pool.status().filter((s) => this.#due(s, now)).map(async (s) => {
      try {
        const document = await pool.probe(s.server, 'health', fetchDiscovery)
        if (document !== null) metadata.accept(document, s.server)
      } catch (err) {
        log.debug({ server: s.server, err: (err as Error).message }, 'keycloak health check failed')
      }
    }))
    this.#options.afterRound?.()
  }

  #due (s: ServerStatus, now: number): boolean {
    if (s.state === 'half_open') return false
    if (s.state === 'open') return s.probeAfter !== null && now >= s.probeAfter
    const heard = Math.max(s.lastSuccessAt ?? Number.NEGATIVE_INFINITY, s.lastFailureAt ?? Number.NEGATIVE_INFINITY)
    return now - heard >= this.#options.cacheMs
  }
}
