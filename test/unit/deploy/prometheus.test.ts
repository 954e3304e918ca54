import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync, copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { parse, stringify } from 'yaml'
import { requireProgram } from '../../fixtures/system-programs.ts'
import {
  DEFAULT_CIRCUIT_OPEN_MINUTES, DEFAULT_FAILED_SYNC_THRESHOLD, DEFAULT_REFRESH_FAILURE_RATE,
  DEFAULT_REFRESH_MIN_ATTEMPTS, DEFAULT_SYNC_QUEUE_CRITICAL, DEFAULT_SYNC_QUEUE_WARNING,
  DEFAULT_SERVICE_TOKEN_EXPIRY_WARNING_DAYS, DEFAULT_SERVICE_TOKEN_GRACE_WARNING_HOURS
} from '../../../src/config/schema.ts'
import { ALERT_NAMES } from '../../../src/alerts/conditions.ts'

// deploy/prometheus/: the rules checked and unit-tested by Debian's promtool, the scrape config
// checked, and the rules held to the in-process alerts' conditions and default thresholds
// (src/alerts/conditions.ts, alerts.* in src/config/schema.ts). That every metric and label they
// name exists is test/integration/deploy-metrics.test.ts, against a live /metrics.

const run = promisify(execFile)
const DIR = fileURLToPath(new URL('../../../deploy/prometheus/', import.meta.url))

interface Rule { alert: string, expr: string, for?: string, labels: Record<string, string>, annotations: Record<string, string> }
interface RuleTest { name: string, alert_rule_test: Array<{ alertname: string, exp_alerts: unknown[] }> }

const rules = ((parse(readFileSync(join(DIR, 'alerts.yaml'), 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups).flatMap((g) => g.rules)
// Series a minute apart, and (the service-token alerts) a day or an hour apart, evaluated hourly.
const TEST_FILES = ['alerts.test.yaml', 'alerts-days.test.yaml']
const unitTests = TEST_FILES.flatMap((file) => (parse(readFileSync(join(DIR, file), 'utf8')) as { tests: RuleTest[] }).tests)
const rule = (name: string): Rule => {
  const found = rules.find((r) => r.alert === name)
  if (found === undefined) throw new Error(`no rule ${name} in alerts.yaml`)
  return found
}

t.test('promtool check rules accepts alerts.yaml', async (t) => {
  const promtool = requireProgram(t, 'promtool')
  if (promtool === null) return
  const { stdout } = await run(promtool, ['check', 'rules', join(DIR, 'alerts.yaml')])
  t.match(stdout, `SUCCESS: ${rules.length} rules found`)
})

t.test('promtool test rules: every alert fires in a unit test, and is held silent in another', async (t) => {
  const promtool = requireProgram(t, 'promtool')
  if (promtool === null) return
  const result = await run(promtool, ['test', 'rules', ...TEST_FILES.map((file) => join(DIR, file))]).then((r) => ({ code: 0, ...r }), (err: { code: number, stdout: string, stderr: string }) => err)
  t.equal(result.code, 0, result.stdout + result.stderr)
  t.match(result.stdout, /SUCCESS/)
  const cases = unitTests.flatMap((u) => u.alert_rule_test)
  for (const r of rules) {
    t.ok(cases.some((c) => c.alertname === r.alert && c.exp_alerts.length > 0), `${r.alert} is shown firing`)
    t.ok(cases.some((c) => c.alertname === r.alert && c.exp_alerts.length === 0), `${r.alert} is shown not firing (before its for, below its threshold, or after it clears)`)
  }
})

t.test('promtool test rules fails when an expectation is wrong (the unit tests can fail)', async (t) => {
  const promtool = requireProgram(t, 'promtool')
  if (promtool === null) return
  const dir = t.testdir()
  copyFileSync(join(DIR, 'alerts.yaml'), join(dir, 'alerts.yaml'))
  // Only the test that holds the expectation, with one word of it changed: the whole file again
  // would only repeat the run above.
  const all = parse(readFileSync(join(DIR, 'alerts.test.yaml'), 'utf8')) as Record<string, unknown> & { tests: RuleTest[] }
  const changed = all.tests.filter((test) => JSON.stringify(test).includes('12 sync items failed'))
  t.equal(changed.length, 1, 'the expectation to change is in one test')
  writeFileSync(join(dir, 'alerts.test.yaml'), stringify({ ...all, tests: changed }).replace('12 sync items failed', '11 sync items failed'))
  const failed = await run(promtool, ['test', 'rules', join(dir, 'alerts.test.yaml')]).then(() => null, (err: { code: number, stdout: string, stderr: string }) => err)
  t.equal(failed?.code, 1)
  t.match(`${failed?.stdout ?? ''}${failed?.stderr ?? ''}`, /FAILED:[\s\S]*GatehouseSyncFailures/)
})

t.test('promtool check config accepts prometheus.yaml (Kubernetes discovery checked by hand: Debian builds promtool without it)', async (t) => {
  const config = parse(readFileSync(join(DIR, 'prometheus.yaml'), 'utf8')) as { rule_files: string[], scrape_configs: Array<Record<string, unknown>> }
  t.same(config.rule_files, ['alerts.yaml'])
  const pods = config.scrape_configs.find((s) => s.job_name === 'gatehouse') as { kubernetes_sd_configs: Array<{ role: string }>, relabel_configs: Array<Record<string, unknown>> }
  t.same(pods.kubernetes_sd_configs, [{ role: 'pod' }])
  t.same(pods.relabel_configs[0], { source_labels: ['__meta_kubernetes_pod_container_name', '__meta_kubernetes_pod_container_port_name'], regex: 'gatehouse;admin', action: 'keep' },
    'only the gatehouse container\'s port named admin (deploy/kubernetes/deployment.yaml) is scraped')
  const hosts = config.scrape_configs.find((s) => s.job_name === 'gatehouse-hosts') as { relabel_configs: Array<Record<string, unknown>> }
  t.same(hosts.relabel_configs, [{ target_label: 'job', replacement: 'gatehouse' }], 'hosts are job gatehouse too, as the rules select')

  const promtool = requireProgram(t, 'promtool')
  if (promtool === null) return
  // Debian's prometheus 2.42 is built without the Kubernetes service discovery, so its promtool
  // refuses kubernetes_sd_configs as an unknown field. The copy checked swaps that one block for
  // an empty static_configs; everything else is checked as written.
  const dir = t.testdir()
  copyFileSync(join(DIR, 'alerts.yaml'), join(dir, 'alerts.yaml'))
  const copy = structuredClone(config) as { scrape_configs: Array<Record<string, unknown>> }
  for (const job of copy.scrape_configs) {
    if (job.kubernetes_sd_configs !== undefined) {
      delete job.kubernetes_sd_configs
      job.static_configs = [{ targets: [] }]
    }
  }
  writeFileSync(join(dir, 'prometheus.yaml'), stringify(copy))
  const { stdout } = await run(promtool, ['check', 'config', join(dir, 'prometheus.yaml')])
  t.match(stdout, /SUCCESS: .*prometheus\.yaml is valid prometheus config file syntax/)
  t.match(stdout, `SUCCESS: ${rules.length} rules found`)
})

t.test('every in-process alert has its rule, with the same default threshold', async (t) => {
  const counterparts: Record<typeof ALERT_NAMES[number], string[]> = {
    circuit_open: ['GatehouseCircuitOpen', 'GatehouseNoKeycloak'],
    sync_queue: ['GatehouseSyncQueueWarning', 'GatehouseSyncQueueCritical'],
    sync_failures: ['GatehouseSyncFailures'],
    token_refresh_failures: ['GatehouseTokenRefreshFailures'],
    service_token_expiring: ['GatehouseServiceTokenExpiring'],
    service_token_grace: ['GatehouseServiceTokenPreviousInUse']
  }
  t.same(Object.keys(counterparts).sort(), [...ALERT_NAMES].sort(), 'every alert of src/alerts/conditions.ts is mapped')
  t.equal(rule('GatehouseCircuitOpen').for, `${DEFAULT_CIRCUIT_OPEN_MINUTES}m`)
  t.equal(rule('GatehouseNoKeycloak').for, `${DEFAULT_CIRCUIT_OPEN_MINUTES}m`)
  t.match(rule('GatehouseCircuitOpen').expr, /gatehouse_circuit_state\) >= 1$/, 'open or half-open, as circuit_open counts')
  t.match(rule('GatehouseSyncQueueWarning').expr, new RegExp(`status=~"pending\\|processing\\|failed"\\}\\) > ${DEFAULT_SYNC_QUEUE_WARNING}$`), 'the unfinished items, as sync_queue counts')
  t.match(rule('GatehouseSyncQueueCritical').expr, new RegExp(` > ${DEFAULT_SYNC_QUEUE_CRITICAL}$`))
  t.match(rule('GatehouseSyncFailures').expr, new RegExp(`result=~"failed\\|dead"\\}\\[1h\\]\\)\\) > ${DEFAULT_FAILED_SYNC_THRESHOLD}$`))
  const refresh = rule('GatehouseTokenRefreshFailures').expr
  t.match(refresh, `) > ${DEFAULT_REFRESH_FAILURE_RATE}\n`)
  t.match(refresh, `[15m])) >= ${DEFAULT_REFRESH_MIN_ATTEMPTS}`)
  t.match(refresh, 'result!="no_refresh_token"', 'sessions without a refresh token are not counted, as in-process')
  t.match(rule('GatehouseServiceTokenExpiring').expr, `< ${DEFAULT_SERVICE_TOKEN_EXPIRY_WARNING_DAYS} * 86400`, 'service_tokens.expiry_warning_days')
  t.match(rule('GatehouseServiceTokenPreviousInUse').expr, `< ${DEFAULT_SERVICE_TOKEN_GRACE_WARNING_HOURS} * 3600`, 'service_tokens.grace_warning_hours')
  for (const r of rules) {
    t.match(r.labels.severity, /^(warning|critical)$/, `${r.alert}: severity`)
    t.ok((r.annotations.summary ?? '').includes('{{ $labels.instance }}'), `${r.alert}: the summary names the sidecar`)
    t.ok((r.annotations.description ?? '').length > 40, `${r.alert}: the description says what to do`)
  }
})
