import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { requireProgram } from '../../fixtures/system-programs.ts'
import { loadConfig } from '../../../src/config/load.ts'
import { commandSpec } from '../../../src/cli/usage.ts'

// deploy/systemd/gatehouse.service and gatehouse-sync.service: `systemd-analyze verify` (unit
// syntax, every key known, the executables there) and `systemd-analyze security --offline`
// (exposure), then the units held to Gatehouse itself: the repository's config.yaml (what the
// install puts in /etc/gatehouse) loaded with each unit's Environment=, the subcommands they
// run, and the exit code they do not restart on. No unit is started: these machines run no
// systemd as PID 1.

const run = promisify(execFile)
const DIR = fileURLToPath(new URL('../../../deploy/systemd/', import.meta.url))
const EXAMPLE = fileURLToPath(new URL('../../../config.yaml', import.meta.url))
const UNITS = ['gatehouse.service', 'gatehouse-sync.service'] as const
const SECRETS = { GATEHOUSE_ENCRYPTION_KEY: '00'.repeat(32), GATEHOUSE_COOKIE_KEY: 'systemd-test-cookie-key-systemd-test', KEYCLOAK_CLIENT_SECRET: 'systemd-test-client-secret' }

/** Every `Key=value` of one section, in order (a key may repeat: Environment=). */
function section (unit: string, name: string): Array<[string, string]> {
  const text = readFileSync(join(DIR, unit), 'utf8')
  const out: Array<[string, string]> = []
  let current = ''
  for (const line of text.split('\n')) {
    const header = /^\[(.+)\]$/.exec(line)
    if (header !== null) current = header[1] as string
    else if (current === name && /^[A-Za-z]+=/.test(line)) {
      const at = line.indexOf('=')
      out.push([line.slice(0, at), line.slice(at + 1)])
    }
  }
  return out
}
const values = (unit: string, sectionName: string, key: string): string[] => section(unit, sectionName).filter(([k]) => k === key).map(([, v]) => v)
const value = (unit: string, key: string): string | undefined => values(unit, 'Service', key).at(-1)
const environment = (unit: string): Record<string, string> => Object.fromEntries(values(unit, 'Service', 'Environment').map((v) => {
  const at = v.indexOf('=')
  return [v.slice(0, at), v.slice(at + 1)]
}))

t.test('systemd-analyze verify accepts both units, with nothing to say', async (t) => {
  const analyze = requireProgram(t, 'systemd-analyze')
  if (analyze === null) return
  // verify checks that ExecStart's program exists: point the copies at the node running this
  // test, so a machine whose node is not /usr/bin/node checks the same units.
  const dir = t.testdir()
  for (const unit of UNITS) writeFileSync(join(dir, unit), readFileSync(join(DIR, unit), 'utf8').replaceAll('/usr/bin/node ', `${process.execPath} `))
  const result = await run(analyze, ['verify', ...UNITS.map((u) => join(dir, u))]).then((r) => ({ code: 0, ...r }), (err: { code: number, stdout: string, stderr: string }) => err)
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stderr, '', 'no unknown key, no warning')
})

t.test('systemd-analyze verify catches a misspelt key and a missing program (the check can fail)', async (t) => {
  const analyze = requireProgram(t, 'systemd-analyze')
  if (analyze === null) return
  const dir = t.testdir()
  writeFileSync(join(dir, 'gatehouse-sync.service'), readFileSync(join(DIR, 'gatehouse-sync.service'), 'utf8').replace('ProtectClock=yes', 'ProtectClok=yes'))
  writeFileSync(join(dir, 'gatehouse.service'), readFileSync(join(DIR, 'gatehouse.service'), 'utf8').replaceAll('/usr/bin/node ', '/nonexistent/node '))
  const result = await run(analyze, ['verify', join(dir, 'gatehouse.service'), join(dir, 'gatehouse-sync.service')]).then(() => null, (err: { code: number, stderr: string }) => err)
  t.equal(result?.code, 1)
  t.match(result?.stderr, "Unknown key 'ProtectClok'")
  t.match(result?.stderr, 'Command /nonexistent/node is not executable')
})

t.test('systemd-analyze security rates both units at exposure 2.0 or less', async (t) => {
  const analyze = requireProgram(t, 'systemd-analyze')
  if (analyze === null) return
  for (const unit of UNITS) {
    // --threshold is the exposure times ten: above it the command exits non-zero.
    const result = await run(analyze, ['security', '--offline=yes', '--threshold=20', join(DIR, unit)]).then((r) => ({ code: 0, ...r }), (err: { code: number, stdout: string, stderr: string }) => err)
    t.equal(result.code, 0, `${unit}: ${result.stdout.split('\n').filter((l) => l.startsWith('→')).join('')}`)
    const exposure = /Overall exposure level for \S+: (\d+\.\d)/.exec(result.stdout)?.[1]
    t.ok(exposure !== undefined && Number(exposure) <= 2, `${unit}: exposure ${exposure ?? 'unread'}`)
    t.comment(`${unit}: exposure ${exposure ?? 'unread'} (systemd-analyze security --offline)`)
  }
})

t.test('hardened as the issue asks: DynamicUser, ProtectSystem=strict, StateDirectory; one user and one state directory for both', async (t) => {
  for (const unit of UNITS) {
    t.equal(value(unit, 'DynamicUser'), 'yes', `${unit}: DynamicUser`)
    t.equal(value(unit, 'User'), 'gatehouse', `${unit}: the same user name, so the same dynamic uid`)
    t.equal(value(unit, 'ProtectSystem'), 'strict', `${unit}: ProtectSystem=strict`)
    t.equal(value(unit, 'StateDirectory'), 'gatehouse', `${unit}: StateDirectory`)
    t.equal(value(unit, 'PrivateTmp'), 'yes', `${unit}: PrivateTmp, SQLite's temporary files`)
    t.equal(value(unit, 'NoNewPrivileges'), 'yes', `${unit}: NoNewPrivileges`)
    t.equal(value(unit, 'CapabilityBoundingSet'), '', `${unit}: no capability`)
    t.equal(value(unit, 'EnvironmentFile'), '/etc/gatehouse/gatehouse.env', `${unit}: secrets from a root-only file, read before the user switch`)
    t.equal(value(unit, 'RestartPreventExitStatus'), '2', `${unit}: a configuration error (exit 2) is not restarted`)
  }
  t.same(values('gatehouse.service', 'Unit', 'Wants'), ['network-online.target gatehouse-sync.service'], 'serve brings the worker up')
  t.match(values('gatehouse-sync.service', 'Unit', 'After')[0], 'gatehouse.service', 'after serve, which applies migrations')
  t.same(values('gatehouse-sync.service', 'Unit', 'PartOf'), ['gatehouse.service'], 'stopped and restarted with serve')
})

t.test('the units run config.yaml as Gatehouse would load it: the database in the state directory, one sync worker', async (t) => {
  for (const unit of UNITS) {
    const env = environment(unit)
    t.equal(env.GATEHOUSE_CONFIG, '/etc/gatehouse/config.yaml', `${unit}: the installed config.yaml`)
    const config = loadConfig({ path: EXAMPLE, env: { ...env, ...SECRETS } })
    t.equal(config.database.path, `/var/lib/${value(unit, 'StateDirectory') ?? ''}/gatehouse.db`, `${unit}: database.path is in the state directory, the one writable place`)
    t.equal(config.environment, 'production')
    const stop = Number(/^(\d+)s$/.exec(value(unit, 'TimeoutStopSec') ?? '')?.[1])
    t.ok(stop * 1000 > config.server.shutdown_timeout_ms, `${unit}: systemd waits longer (${stop} s) than the drain (${config.server.shutdown_timeout_ms} ms) before SIGKILL`)
    if (unit === 'gatehouse.service') t.equal(config.sync.enabled, false, 'serve runs no worker: gatehouse-sync.service does')
  }
  const unset = loadConfig({ path: EXAMPLE, env: SECRETS })
  t.equal(unset.sync.enabled, true, 'without the unit\'s GATEHOUSE_SYNC_ENABLED, serve replays the queue itself')
})

t.test('ExecStart runs commands Gatehouse has, from the built bundle (package.json bin)', async (t) => {
  t.same(values('gatehouse.service', 'Service', 'ExecStart'), ['/usr/bin/node --max-semi-space-size=16 /opt/gatehouse/dist/bundle/gatehouse.js serve'])
  t.same(values('gatehouse.service', 'Service', 'ExecStartPre'), ['/usr/bin/node --max-semi-space-size=16 /opt/gatehouse/dist/bundle/gatehouse.js config validate'])
  t.same(values('gatehouse-sync.service', 'Service', 'ExecStart'), ['/usr/bin/node --max-semi-space-size=16 /opt/gatehouse/dist/bundle/gatehouse.js sync start'])
  t.ok(commandSpec('serve') !== undefined)
  t.ok(commandSpec('config')?.forms.some((f) => f.sub === 'validate'))
  t.ok(commandSpec('sync')?.forms.some((f) => f.sub === 'start'))
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { bin: Record<string, string> }
  t.equal(pkg.bin.gatehouse, 'dist/bundle/gatehouse.js')
})
