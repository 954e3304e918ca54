/**
 * What a PromQL expression names, read without a PromQL parser: enough to check the rules and
 * the dashboard against a live /metrics (test/integration/deploy-metrics.test.ts). Strings in
 * quotes are only ever label values here, so metric names are the identifiers outside them that
 * are followed by a selector, a range or nothing (not a function's `(`, not a `by (` list).
 */
export interface Selector {
  /** The metric as exposed: a histogram's `_bucket`, `_sum` and `_count` folded into its name. */
  metric: string
  /** The name as written. */
  written: string
  matchers: Array<{ label: string, op: '=' | '!=' | '=~' | '!~', value: string }>
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset'])

/** Every metric selector in `expr`, with its label matchers. */
export function selectorsOf (expr: string): Selector[] {
  const out: Selector[] = []
  // Drop the label lists of by/without/on/ignoring first, so their names are not metrics.
  const text = expr.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  for (const m of text.matchAll(/("(?:[^"\\]|\\.)*")|\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\{([^}]*)\})?(?!\s*\()/g)) {
    if (m[1] !== undefined) continue
    const written = m[2] as string
    if (KEYWORDS.has(written) || /^\d/.test(written)) continue
    // Durations inside [...] and numbers are not names; neither are Grafana's $__ variables.
    const before = text.slice(0, m.index)
    if (/\[[^\]]*$/.test(before) || before.endsWith('$')) continue
    const matchers = [...(m[4] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)]
      .map((x) => ({ label: x[1] as string, op: x[2] as Selector['matchers'][number]['op'], value: x[3] as string }))
    out.push({ metric: written.replace(/_(bucket|sum|count)$/, ''), written, matchers })
  }
  return out
}

/** Label names an expression groups by (`by (a, b)`, `without (c)`). */
export function groupingLabelsOf (expr: string): string[] {
  return [...expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) => (m[1] as string).split(',').map((s) => s.trim()).filter((s) => s !== ''))
}
