/**
 * Wall-clock arithmetic for the daily digest in an IANA time zone, with Intl only (no
 * time-zone library): a zone's offset at an instant is what Intl says the local time is
 * there, minus UTC.
 */

const formatters = new Map<string, Intl.DateTimeFormat>()

function partsIn (ms: number, zone: string): { year: number, month: number, day: number, hour: number, minute: number, second: number } {
  let format = formatters.get(zone)
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
    formatters.set(zone, format)
  }
  const parts = Object.fromEntries(format.formatToParts(ms).filter((p) => p.type !== 'literal').map((p) => [p.type, Number(p.value)]))
  return { year: parts.year as number, month: parts.month as number, day: parts.day as number, hour: parts.hour as number, minute: parts.minute as number, second: parts.second as number }
}

/** The zone's offset from UTC at `ms`, in milliseconds (Europe/Berlin in winter: 3 600 000). */
export function zoneOffsetMs (ms: number, zone: string): number {
  const p = partsIn(ms, zone)
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000
}

/** The instant at which the wall clock in `zone` shows that date and time. */
export function zonedTime (year: number, month: number, day: number, hour: number, minute: number, zone: string): number {
  const guess = Date.UTC(year, month - 1, day, hour, minute)
  const first = guess - zoneOffsetMs(guess, zone)
  // Around a DST change the offset at the answer differs from the guess's: take the answer's.
  const second = guess - zoneOffsetMs(first, zone)
  return second
}

/**
 * The latest instant at or before `now` when the clock in `zone` showed `time` (`HH:MM`): the
 * digest that is due now, if it has not been sent.
 */
export function latestOccurrence (now: number, time: string, zone: string): number {
  const [hour, minute] = time.split(':').map(Number) as [number, number]
  const today = partsIn(now, zone)
  const candidate = zonedTime(today.year, today.month, today.day, hour, minute, zone)
  if (candidate <= now) return candidate
  return zonedTime(today.year, today.month, today.day - 1, hour, minute, zone)
}
