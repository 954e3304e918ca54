import { LRUCache } from 'lru-cache'

/** Failures of one client address in the current window. */
interface Window {
  startedAt: number
  failures: number
  /** Locked until this time (ms), or 0. */
  lockedUntil: number
}

/** Options of {@link FailureLimiter}. */
export interface FailureLimiterOptions {
  /** Failures within `windowMs` that lock the address; 0 turns the limiter off. */
  maxFailures: number
  /** The counting window, and how long a lockout lasts, in milliseconds. */
  windowMs: number
  /** Addresses remembered at once; the least recently seen are forgotten first. Default is 10000. */
  maxAddresses?: number
}

/**
 * A failed-attempt limit per client address for service tokens, in memory. Not the
 * `login_attempts` table that form logins use: a wrong bearer token costs no scrypt check,
 * so the table's job (bounding concurrent password checks across processes) does not arise,
 * and a write per refused request would turn a scanner into a stream of SQLite writes. The
 * price is that each process counts for itself (a cluster of N workers allows N times as
 * many); with 256-bit secrets the limit is about noise and scanners, not guessing.
 */
export class FailureLimiter {
  readonly #max: number
  readonly #windowMs: number
  readonly #windows: LRUCache<string, Window>

  constructor (options: FailureLimiterOptions) {
    this.#max = options.maxFailures
    this.#windowMs = options.windowMs
    this.#windows = new LRUCache({ max: options.maxAddresses ?? 10_000 })
  }

  /** Milliseconds the address stays locked, or 0. */
  lockedFor (ip: string | undefined, now: number): number {
    if (this.#max === 0 || ip === undefined) return 0
    const window = this.#windows.get(ip)
    return window === undefined || window.lockedUntil <= now ? 0 : window.lockedUntil - now
  }

  /** Counts one failure; true when it is the one that locks the address. */
  fail (ip: string | undefined, now: number): boolean {
    if (this.#max === 0 || ip === undefined) return false
    let window = this.#windows.get(ip)
    if (window === undefined || now - window.startedAt >= this.#windowMs) {
      window = { startedAt: now, failures: 0, lockedUntil: 0 }
      this.#windows.set(ip, window)
    }
    window.failures++
    if (window.failures < this.#max || window.lockedUntil > now) return false
    window.lockedUntil = now + this.#windowMs
    return true
  }
}
