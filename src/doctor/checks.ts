/** How one check came out. */
export type CheckStatus = 'pass' | 'warn' | 'fail'

/** One line of `doctor diagnose`: what was checked, what was found, and the fix to apply. */
export interface CheckResult {
  /** What was checked: `config`, `database`, `keycloak http://kc-1:8080`… */
  name: string
  status: CheckStatus
  /** What was found, in one sentence. */
  detail: string
  /** What to do about it; null when nothing needs doing. */
  fix: string | null
}

/** A passing check. */
export const pass = (name: string, detail: string): CheckResult => ({ name, status: 'pass', detail, fix: null })
/** A check that found something to look at. */
export const warn = (name: string, detail: string, fix: string | null): CheckResult => ({ name, status: 'warn', detail, fix })
/** A check that found something broken. */
export const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'fail', detail, fix })

/** Counts by status. */
export function summarise (results: readonly CheckResult[]): Record<CheckStatus, number> {
  const counts: Record<CheckStatus, number> = { pass: 0, warn: 0, fail: 0 }
  for (const r of results) counts[r.status]++
  return counts
}

/** The report as text: one line per check, its fix indented under it. */
export function formatChecks (results: readonly CheckResult[]): string {
  const width = Math.min(34, Math.max(...results.map((r) => r.name.length)))
  const lines = results.flatMap((r) => [
    `${r.status.toUpperCase().padEnd(4)}  ${r.name.padEnd(width)}  ${r.detail}`,
    ...(r.fix === null ? [] : [`${' '.repeat(6 + width + 2)}fix: ${r.fix}`])
  ])
  const s = summarise(results)
  return [...lines, '', `${s.pass} passed, ${s.warn} warning${s.warn === 1 ? '' : 's'}, ${s.fail} failed`].join('\n')
}
