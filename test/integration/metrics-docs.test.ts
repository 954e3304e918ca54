// The README's metrics table against a running sidecar's /metrics, both ways, as
// test/unit/errors.test.ts checks the error catalogue against docs/errors.md.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'

/** One row of the README's table. */
interface DocumentedMetric { names: string[], type: string, labels: string[] }

function documentedMetrics (): DocumentedMetric[] {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('## Observability'), readme.indexOf('\n## ', readme.indexOf('## Observability') + 1))
  const ticked = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1] as string)
  return section.split('\n').filter((line) => line.startsWith('| `gatehouse_')).map((line) => {
    const [name = '', type = '', labels = ''] = line.split('|').slice(1).map((cell) => cell.trim())
    return { names: ticked(name), type, labels: ticked(labels) }
  })
}

/** Metric name → type, from the `# TYPE` lines of a scrape. */
function exposedTypes (scrape: string): Map<string, string> {
  return new Map([...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1] as string, m[2] as string]))
}

/** Metric name → the label names its samples carry (histogram `le` and suffixes folded in). */
function sampleLabels (scrape: string, names: ReadonlySet<string>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>()
  for (const [, sample = '', labels = ''] of scrape.matchAll(/^([a-z_]+)\{([^}]*)\} /gm)) {
    const name = names.has(sample) ? sample : sample.replace(/_(bucket|sum|count)$/, '')
    const set = out.get(name) ?? new Set<string>()
    for (const [, label = ''] of labels.matchAll(/([a-z_]+)="/g)) if (label !== 'le') set.add(label)
    out.set(name, set)
  }
  return out
}

const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), {
  upstream: { url: upstream.url },
  keycloak: { issuer: 'http://127.0.0.1:9/realms/test', server: 'http://127.0.0.1:9', client_id: 'app' },
  feature_flags: { keycloak_enabled: false }
}, { 'app.yaml': 'rules:\n  - paths: [/public/**]\n    allow: public\n' }))
// A few requests, so that the labelled request counters have samples.
const statuses = [(await rawRequest(gatehouse.proxyUrl, '/public/x')).status, (await rawRequest(gatehouse.proxyUrl, '/private')).status]
if (statuses.join() !== '200,401') throw new Error(`unexpected statuses ${statuses.join()}`)
const scrape = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
const exposed = exposedTypes(scrape)
const documented = documentedMetrics()
const patterns = documented.flatMap((d) => d.names.filter((n) => n.endsWith('*')).map((n) => n.slice(0, -1)))
const explicit = new Map(documented.flatMap((d) => d.names.filter((n) => !n.endsWith('*')).map((n) => [n, d] as const)))

t.test('every metric /metrics exposes is in the README, and every one the README lists is exposed', async (t) => {
  t.ok(exposed.size > 20, 'the scrape has metrics')
  t.ok(explicit.size >= 20, 'the README lists them')
  const own = [...exposed.keys()].filter((name) => !patterns.some((p) => name.startsWith(p)))
  t.same(own.sort(), [...explicit.keys()].sort())
  for (const pattern of patterns) t.ok([...exposed.keys()].some((name) => name.startsWith(pattern)), `${pattern}* matches an exposed metric`)
})

t.test('each metric has the type and the labels the README gives it', async (t) => {
  const withSamples = sampleLabels(scrape, new Set(exposed.keys()))
  for (const [name, doc] of explicit) {
    t.equal(exposed.get(name), doc.type, `${name}: type`)
    const metric = gatehouse.app.metrics.registry.getSingleMetric(name) as unknown as { labelNames?: readonly string[] } | undefined
    t.same([...(metric?.labelNames ?? [])].sort(), [...doc.labels].sort(), `${name}: labels`)
    const seen = withSamples.get(name)
    if (seen !== undefined) t.same([...seen].sort(), [...doc.labels].sort(), `${name}: the scraped samples carry exactly those labels`)
  }
  t.ok(withSamples.has('gatehouse_requests_total'), 'labelled samples were checked')
  t.match(scrape, /^gatehouse_requests_total\{decision="allow",auth_mode="none",code="2xx"\} 1$/m)
  t.match(scrape, /^gatehouse_requests_total\{decision="deny",auth_mode="none",code="4xx"\} 1$/m)
  t.match(scrape, /^gatehouse_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$/m)
  t.match(scrape, /^gatehouse_upstream_errors_total\{kind="refused"\} 0$/m)
  t.match(scrape, /^gatehouse_log_lines_dropped_total 0$/m)
})
