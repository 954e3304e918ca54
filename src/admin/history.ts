import type { Clock } from '../clock.ts'
import type { ServerStatus } from '../keycloak/failover.ts'

/**
 * How a Keycloak server looked within one minute, worst first: `open` and `half_open` are its
 * circuit; `failing` a closed circuit counting failures; `closed` a closed circuit whose last
 * call succeeded; `unknown` not heard from yet.
 */
export type ServerHealth = 'open' | 'half_open' | 'failing' | 'closed' | 'unknown'

const SEVERITY: Record<ServerHealth, number> = { unknown: 0, closed: 1, failing: 2, half_open: 3, open: 4 }

/** A server's health now, from its breaker's snapshot. */
export function healthOf (s: Pick<ServerStatus, 'state' | 'consecutiveFailures' | 'lastSuccessAt' | 'lastFailureAt'>): ServerHealth {
  if (s.state !== 'closed') return s.state
  if (s.consecutiveFailures > 0) return 'failing'
  return s.lastSuccessAt === null && s.lastFailureAt === null ? 'unknown' : 'closed'
}

interface Minute {
  /** Minutes since the epoch. */
  minute: number
  /** The worst health each server had during the minute. */
  circuits: Map<string, ServerHealth>
  /** Cumulative counter values at the last sample of the minute. */
  counters: Map<string, number>
}

/** Options of {@link History}. */
export interface HistoryOptions {
  clock: Clock
  /** How much is kept, in minutes. Default is 60. */
  windowMinutes?: number
}

const MINUTE = 60_000

/**
 * The last hour, in memory: a ring of one-minute buckets holding each Keycloak server's worst
 * health in that minute and the cumulative values of a few counters (decisions, token
 * refreshes) at its last sample. What the dashboard draws and the alerts judge rates by. Kept
 * per process: a restart starts it empty (the alert state itself is in SQLite).
 */
export class History {
  readonly #clock: Clock
  readonly #window: number
  readonly #minutes: Minute[] = []
  readonly #unhealthySince = new Map<string, number>()
  readonly #startedAt: number

  constructor (options: HistoryOptions) {
    this.#clock = options.clock
    this.#window = options.windowMinutes ?? 60
    this.#startedAt = options.clock.now()
  }

  /** How long this history has been recording, in milliseconds. */
  get coveredMs (): number {
    return this.#clock.now() - this.#startedAt
  }

  #bucket (now: number): Minute {
    const minute = Math.floor(now / MINUTE)
    const last = this.#minutes.at(-1)
    if (last !== undefined && last.minute === minute) return last
    // A new minute starts from the last known counter values, so a minute without a sample
    // (an idle process) shows no traffic rather than a gap in the cumulative series.
    const bucket: Minute = { minute, circuits: new Map(), counters: new Map(last?.counters ?? []) }
    this.#minutes.push(bucket)
    while (this.#minutes.length > 0 && (this.#minutes[0] as Minute).minute <= minute - this.#window) this.#minutes.shift()
    return bucket
  }

  /**
   * Records every server's health now (called on each pool change and each sample): the worst
   * of the minute is kept, and when a circuit first left `closed`, for the circuit alert.
   */
  observeCircuits (servers: readonly ServerStatus[]): void {
    const now = this.#clock.now()
    const bucket = this.#bucket(now)
    for (const s of servers) {
      const health = healthOf(s)
      const before = bucket.circuits.get(s.server)
      if (before === undefined || SEVERITY[health] > SEVERITY[before]) bucket.circuits.set(s.server, health)
      if (s.state === 'closed') this.#unhealthySince.delete(s.server)
      else if (!this.#unhealthySince.has(s.server)) this.#unhealthySince.set(s.server, s.openedAt ?? now)
    }
  }

  /** Since when a server's circuit has not been closed (open or half-open since), or null. */
  unhealthySince (server: string): number | null {
    return this.#unhealthySince.get(server) ?? null
  }

  /** Records cumulative counter values (`decision:allow`, `refresh:success`…) now. */
  recordCounters (values: ReadonlyMap<string, number>): void {
    const bucket = this.#bucket(this.#clock.now())
    for (const [key, value] of values) bucket.counters.set(key, value)
  }

  /**
   * One server's health per minute over the window, oldest first, `null` for minutes with no
   * record (before this process started, or a minute nothing was observed).
   */
  circuitTimeline (server: string): Array<ServerHealth | null> {
    return this.#series((m) => m?.circuits.get(server) ?? null)
  }

  /** Per-minute increases of a counter over the window, oldest first (0 where nothing is known). */
  counterSeries (key: string): number[] {
    let previous = 0
    return this.#series((m) => {
      if (m === undefined) return 0
      const value = m.counters.get(key) ?? previous
      const delta = Math.max(0, value - previous)
      previous = value
      return delta
    })
  }

  /** How much a counter grew over the last `ms` milliseconds (at minute resolution). */
  increase (key: string, ms: number): number {
    const from = Math.floor((this.#clock.now() - ms) / MINUTE)
    const latest = this.#minutes.at(-1)?.counters.get(key) ?? 0
    // The cumulative value at the end of the last minute before the span (0 when this process
    // was not yet recording: its counters started at 0).
    let base = 0
    for (const m of this.#minutes) {
      if (m.minute >= from) break
      base = m.counters.get(key) ?? base
    }
    return Math.max(0, latest - base)
  }

  /** The minute (ms since the epoch) each entry of a series starts at, oldest first. */
  minuteStarts (): number[] {
    const current = Math.floor(this.#clock.now() / MINUTE)
    return Array.from({ length: this.#window }, (_, i) => (current - this.#window + 1 + i) * MINUTE)
  }

  #series<T> (read: (m: Minute | undefined) => T): T[] {
    const current = Math.floor(this.#clock.now() / MINUTE)
    const byMinute = new Map(this.#minutes.map((m) => [m.minute, m]))
    const out: T[] = []
    for (let minute = current - this.#window + 1; minute <= current; minute++) out.push(read(byMinute.get(minute)))
    return out
  }
}
