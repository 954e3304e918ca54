/**
 * Time source. Every module that reads the time takes a `Clock` so tests can move time
 * without sleeping (HOUSE-STYLE §6).
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number
}

/** The wall clock. */
export const systemClock: Clock = { now: () => Date.now() }

/** Seconds since the Unix epoch, as JWT claims count time (RFC 7519 §2 NumericDate). */
export function epochSeconds (clock: Clock): number {
  return Math.floor(clock.now() / 1000)
}
