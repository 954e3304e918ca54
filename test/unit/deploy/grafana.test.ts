import t from 'tap'
import { readFileSync } from 'node:fs'
import { selectorsOf } from './promql.ts'

// deploy/grafana/gatehouse.json, checked without a Grafana: the layout (a 24-column grid,
// nothing overlapping), every query on the dashboard's Prometheus variable and scoped to the
// chosen sidecars, and the views the issue asks for. That the metrics exist is
// test/integration/deploy-metrics.test.ts, against a live /metrics.

interface Target { refId: string, expr: string, datasource: { type: string, uid: string } }
interface Panel { id: number, type: string, title: string, description?: string, gridPos: { x: number, y: number, w: number, h: number }, datasource?: { type: string, uid: string }, targets?: Target[] }
interface Dashboard { uid: string, title: string, refresh: string, panels: Panel[], templating: { list: Array<{ name: string, type: string, query: unknown }> } }

const dashboard = JSON.parse(readFileSync(new URL('../../../deploy/grafana/gatehouse.json', import.meta.url), 'utf8')) as Dashboard
const queries = dashboard.panels.filter((p) => p.type !== 'row')

t.test('the dashboard is importable as written: a stable uid, a Prometheus datasource variable, sidecar and job variables', async (t) => {
  t.equal(dashboard.uid, 'gatehouse')
  t.equal(dashboard.title, 'Gatehouse')
  t.match(dashboard.refresh, /^\d+s$/)
  const variables = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]))
  t.match(variables.datasource, { type: 'datasource', query: 'prometheus' })
  t.match(variables.job, { type: 'query', query: { query: 'label_values(gatehouse_build_info, job)' } })
  t.match(variables.instance, { type: 'query', query: { query: 'label_values(gatehouse_build_info{job="$job"}, instance)' } })
})

t.test('panels: unique ids, inside 24 columns, none overlapping, each with a title and its queries', async (t) => {
  const ids = dashboard.panels.map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'ids are unique')
  const cells = new Map<string, string>()
  for (const p of dashboard.panels) {
    const { x, y, w, h } = p.gridPos
    t.ok(x >= 0 && w >= 1 && x + w <= 24, `${p.title}: inside the 24 columns`)
    for (let i = x; i < x + w; i++) {
      for (let j = y; j < y + h; j++) {
        const other = cells.get(`${i},${j}`)
        if (other !== undefined) t.fail(`${p.title} overlaps ${other} at ${i},${j}`)
        cells.set(`${i},${j}`, p.title)
      }
    }
  }
  for (const p of queries) {
    t.ok(p.title.length > 0, `panel ${p.id} has a title`)
    t.ok((p.description ?? '').length > 0, `${p.title}: says what it shows`)
    t.ok((p.targets ?? []).length > 0, `${p.title}: has queries`)
    t.same(p.datasource, { type: 'prometheus', uid: '${datasource}' }, `${p.title}: on the dashboard's Prometheus`)
    for (const target of p.targets ?? []) {
      t.same(target.datasource, { type: 'prometheus', uid: '${datasource}' }, `${p.title} ${target.refId}: on the dashboard's Prometheus`)
      for (const s of selectorsOf(target.expr).filter((s) => s.metric !== 'vector')) {
        t.ok(s.matchers.some((m) => m.label === 'instance' && m.op === '=~' && m.value === '$instance'), `${p.title}: ${s.written} is scoped to the chosen sidecars`)
      }
    }
  }
})

t.test('the views the issue names: decisions by entry point, latency percentiles, mode, circuits, queue, sessions', async (t) => {
  const exprs = (title: RegExp): string => queries.filter((p) => title.test(p.title)).flatMap((p) => (p.targets ?? []).map((x) => x.expr)).join('\n')
  t.match(exprs(/^Decisions by entry point$/), 'sum by (entrypoint, decision) (rate(gatehouse_decisions_total')
  t.match(exprs(/^Proxy responses/), 'sum by (code) (rate(gatehouse_requests_total')
  const latency = exprs(/^Request latency/)
  for (const q of ['0.5', '0.95', '0.99']) t.match(latency, `histogram_quantile(${q}, sum by (le) (rate(gatehouse_request_duration_seconds_bucket`)
  t.match(exprs(/^Decision latency by entry point$/), 'sum by (le, entrypoint) (rate(gatehouse_decision_duration_seconds_bucket')
  t.match(exprs(/^Mode$/), 'gatehouse_mode{')
  t.match(exprs(/^Circuit state by server$/), 'max by (server) (gatehouse_circuit_state')
  t.match(exprs(/^Sync queue/), 'gatehouse_sync_queue_depth')
  t.match(exprs(/^Active sessions/), 'gatehouse_sessions_active')
})
