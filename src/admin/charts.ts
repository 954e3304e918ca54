import type { ServerHealth } from './history.ts'

/*
 * Small inline SVG charts for the dashboard: no script, no external asset, colours from CSS
 * classes (the page's stylesheet carries the CSP nonce), a text alternative on each.
 */

const esc = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
const MINUTE = 60_000
const hhmm = (ms: number): string => new Date(ms).toISOString().slice(11, 16)

/**
 * One server's circuit over the window: a strip of one cell per minute, runs of the same
 * health merged, each run titled with its minutes (UTC) and state.
 */
export function circuitStrip (minutes: ReadonlyArray<ServerHealth | null>, fromMs: number, label: string): string {
  const runs: Array<{ start: number, length: number, health: ServerHealth | null }> = []
  minutes.forEach((health, i) => {
    const last = runs.at(-1)
    if (last !== undefined && last.health === health) last.length++
    else runs.push({ start: i, length: 1, health })
  })
  const counts = new Map<string, number>()
  for (const h of minutes) if (h !== null) counts.set(h, (counts.get(h) ?? 0) + 1)
  const summary = counts.size === 0 ? 'no data yet' : [...counts].map(([h, n]) => `${h.replace('_', '-')} ${n} min`).join(', ')
  const rects = runs.map((r) => {
    const from = hhmm(fromMs + r.start * MINUTE)
    const to = hhmm(fromMs + (r.start + r.length) * MINUTE)
    return `<rect x="${r.start}" y="0" width="${r.length}" height="10" class="h-${r.health ?? 'none'}"><title>${from}–${to} UTC: ${r.health === null ? 'no data' : r.health.replace('_', '-')}</title></rect>`
  }).join('')
  return `<svg class="strip" viewBox="0 0 ${minutes.length} 10" preserveAspectRatio="none" role="img" aria-label="${esc(`${label}, last hour: ${summary}`)}" data-summary="${esc(summary)}">${rects}</svg>`
}

/**
 * Stacked bars, one per minute: `series` maps a name (its CSS class `s-<name>`) to per-minute
 * counts, stacked in the order given, scaled to the busiest minute.
 */
export function stackedBars (series: Readonly<Record<string, readonly number[]>>, fromMs: number, label: string): string {
  const names = Object.keys(series)
  const length = Math.max(0, ...names.map((n) => series[n]?.length ?? 0))
  const totals = Array.from({ length }, (_, i) => names.reduce((sum, n) => sum + (series[n]?.[i] ?? 0), 0))
  const max = Math.max(1, ...totals)
  const height = 30
  const bars: string[] = []
  for (let i = 0; i < length; i++) {
    if (totals[i] === 0) continue
    let y = height
    const parts = names.map((n) => `${n} ${series[n]?.[i] ?? 0}`).join(', ')
    for (const n of names) {
      const v = series[n]?.[i] ?? 0
      if (v === 0) continue
      const h = (v / max) * height
      y -= h
      bars.push(`<rect x="${i + 0.1}" y="${y.toFixed(3)}" width="0.8" height="${h.toFixed(3)}" class="s-${n}"><title>${hhmm(fromMs + i * MINUTE)} UTC: ${esc(parts)}</title></rect>`)
    }
  }
  const sum = names.map((n) => `${n} ${(series[n] ?? []).reduce((a, b) => a + b, 0)}`).join(', ')
  return `<svg class="bars" viewBox="0 0 ${Math.max(length, 1)} ${height}" preserveAspectRatio="none" role="img" aria-label="${esc(`${label}, last hour: ${sum}; busiest minute ${Math.max(0, ...totals)}`)}"><line x1="0" y1="${height}" x2="${length}" y2="${height}" class="axis"/>${bars.join('')}</svg>`
}
