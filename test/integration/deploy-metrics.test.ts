// Every metric and label that deploy/prometheus/alerts.yaml and deploy/grafana/gatehouse.json
// name, against a live /metrics: a renamed metric or label would leave an alert that never
// fires and a panel that stays empty, and nothing else would notice.
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { groupingLabelsOf, selectorsOf, type Selector } from '../unit/deploy/promql.ts'

const read = (path: string): string => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8')
const rules = (parse(read('deploy/prometheus/alerts.yaml')) as { groups: Array<{ rules: Array<{ alert: string, expr: string }> }> }).groups.flatMap((g) => g.rules)
interface Panel { title: string, type: string, targets?: Array<{ expr: string }> }
const dashboard = JSON.parse(read('deploy/grafana/gatehouse.json')) as { panels: Panel[], templating: { list: Array<{ name: string, query: unknown }> } }

// Where each expression comes from, for the messages.
const expressions: Array<{ where: string, expr: string }> = [
  ...rules.map((r) => ({ where: `alerts.yaml ${r.alert}`, expr: r.expr })),
  ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => ({ where: `gatehouse.json "${p.title}"`, expr: x.expr })))
]
// Template variables: label_values(selector, label).
const variables = dashboard.templating.list.flatMap((v) => {
  const query = typeof v.query === 'object' && v.query !== null ? (v.query as { query?: string }).query : undefined
  const m = query === undefined ? null : /^label_values\((.*), *([a-z_]+)\)$/.exec(query)
  return m === null ? [] : [{ where: `gatehouse.json variable ${v.name}`, selector: m[1] as string, label: m[2] as string }]
})

// Labels Prometheus adds to every scraped series, and the histogram bucket bound.
const TARGET_LABELS = new Set(['instance', 'job'])
// Series Prometheus makes itself, not Gatehouse.
const PROMETHEUS_SERIES = new Set(['up'])
// A label value no scrape here shows (no refresh or replay ran) must at least be one the README's
// metric table documents for that metric.
const readmeRows = read('README.md').split('\n').filter((line) => line.startsWith('| `gatehouse_'))

const standin = await startKeycloakStandin()
t.teardown(() => standin.close())
const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(standin, upstream.url), { 'app.yaml': 'rules:\n  - paths: [/public/**]\n    allow: public\n' }))
await gatehouse.app.keycloak.jwks.refresh('manual')
// An allow, a deny and a bearer check, so that the labelled counters have samples.
const token = await standin.mintAccessToken({})
const statuses = [
  (await rawRequest(gatehouse.proxyUrl, '/public/x')).status,
  (await rawRequest(gatehouse.proxyUrl, '/private')).status,
  (await rawRequest(gatehouse.proxyUrl, '/private', { headers: { authorization: `Bearer ${token}` } })).status
]
if (statuses.join() !== '200,401,200') throw new Error(`unexpected statuses ${statuses.join()}`)
const scrape = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
const exposed = new Set([...scrape.matchAll(/^# TYPE (\S+) \S+$/gm)].map((m) => m[1] as string))
const types = new Map([...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1] as string, m[2] as string]))

/** Label → values seen in the scrape's samples of `metric`. */
function sampledValues (metric: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>()
  for (const [, name = '', labels = ''] of scrape.matchAll(/^([a-z_0-9]+)\{([^}]*)\} /gm)) {
    if (name.replace(/_(bucket|sum|count)$/, '') !== metric && name !== metric) continue
    for (const [, label = '', value = ''] of labels.matchAll(/([a-z_]+)="([^"]*)"/g)) {
      const set = out.get(label) ?? new Set<string>()
      set.add(value)
      out.set(label, set)
    }
  }
  return out
}

function labelNamesOf (metric: string): Set<string> {
  const m = gatehouse.app.metrics.registry.getSingleMetric(metric) as unknown as { labelNames?: readonly string[] } | undefined
  return new Set([...(m?.labelNames ?? []), ...TARGET_LABELS, ...(types.get(metric) === 'histogram' ? ['le'] : [])])
}

/** The literal values a matcher names: `a|b` for a regex of plain alternatives, else the value. */
const literals = (m: Selector['matchers'][number]): string[] => m.op.endsWith('~') ? m.value.split('|') : [m.value]

function checkSelector (t: Test, where: string, s: Selector): void {
  if (PROMETHEUS_SERIES.has(s.metric)) {
    t.same(s.matchers.map((m) => `${m.label}${m.op}${m.value}`), ['job=gatehouse'], `${where}: ${s.written} is the scrape job deploy/prometheus/prometheus.yaml names`)
    return
  }
  t.ok(exposed.has(s.metric), `${where}: ${s.written} is in /metrics`)
  const names = labelNamesOf(s.metric)
  const sampled = sampledValues(s.metric)
  const row = readmeRows.find((line) => line.startsWith(`| \`${s.metric}\``)) ?? ''
  for (const m of s.matchers) {
    t.ok(names.has(m.label), `${where}: ${s.metric} has the label ${m.label}`)
    if (TARGET_LABELS.has(m.label) || m.value.startsWith('$')) continue
    for (const value of literals(m)) {
      const seen = sampled.get(m.label)
      // A gauge is set for every value it has at each scrape (every mode, every queue status);
      // a counter only shows the values that have happened.
      if (types.get(s.metric) === 'gauge' && seen !== undefined) t.ok(seen.has(value), `${where}: ${s.metric}{${m.label}="${value}"} is a value /metrics shows`)
      else if (seen?.has(value) !== true) t.ok(new RegExp(`\\b${value}\\b`).test(row), `${where}: ${s.metric}{${m.label}="${value}"} is a value the README documents`)
    }
  }
}

t.test('every metric and label the alert rules name exists in a live /metrics', async (t) => {
  t.ok(rules.length >= 10)
  for (const { where, expr } of expressions.filter((e) => e.where.startsWith('alerts.yaml'))) {
    const selectors = selectorsOf(expr).filter((s) => s.metric !== 'vector')
    t.ok(selectors.length > 0, `${where}: names a metric`)
    for (const s of selectors) checkSelector(t, where, s)
    const all = new Set(selectors.flatMap((s) => [...labelNamesOf(s.metric)]))
    for (const label of groupingLabelsOf(expr)) t.ok(all.has(label), `${where}: groups by ${label}, a label of its metrics`)
  }
})

t.test('every metric and label the dashboard\'s panels and variables name exists in a live /metrics', async (t) => {
  const panelExprs = expressions.filter((e) => e.where.startsWith('gatehouse.json'))
  t.ok(panelExprs.length >= 30)
  for (const { where, expr } of panelExprs) {
    const selectors = selectorsOf(expr.replaceAll('$__rate_interval', '5m')).filter((s) => s.metric !== 'vector')
    t.ok(selectors.length > 0, `${where}: names a metric`)
    for (const s of selectors) checkSelector(t, where, s)
    const all = new Set(selectors.flatMap((s) => [...labelNamesOf(s.metric)]))
    for (const label of groupingLabelsOf(expr)) t.ok(all.has(label), `${where}: groups by ${label}, a label of its metrics`)
  }
  t.same(variables.map((v) => v.label).sort(), ['instance', 'job'])
  for (const v of variables) for (const s of selectorsOf(v.selector)) checkSelector(t, v.where, s)
})

t.test('the check itself: a misspelt metric or label is caught', async (t) => {
  const [misspelt] = selectorsOf('sum by (instance) (gatehouse_circuit_states{server="x"})')
  t.notOk(exposed.has(misspelt?.metric ?? ''), 'gatehouse_circuit_states is not exposed')
  t.notOk(labelNamesOf('gatehouse_sync_queue_depth').has('state'), 'gatehouse_sync_queue_depth has no label state')
  t.ok(sampledValues('gatehouse_mode').get('mode')?.has('offline'), 'gatehouse_mode shows every mode')
  t.notOk(sampledValues('gatehouse_sync_queue_depth').get('status')?.has('queued'), 'no sync status queued')
})
