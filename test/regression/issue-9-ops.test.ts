import t from 'tap'
import { chmodSync, existsSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { openDatabase } from '../../src/store/db.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import { VERSION } from '../../src/version.ts'
import { runGatehouse, runInProcess, startInProcess } from '../fixtures/cli.ts'
import { TEST_SECRETS, writeConfig } from '../fixtures/gatehouse.ts'
import { requireProgram, type ProgramSpec } from '../fixtures/system-programs.ts'

// Issue 9, items 15 (trust_proxy), 19 (a database path that cannot be created) and 21 (CLI).

// A policy file with a rule, so the only warning is the one a test is about.
const ONE_RULE = { 'app.yaml': 'rules:\n  - paths: [/healthz]\n    allow: public\n' }

const NOWHERE = {
  upstream: { url: 'http://127.0.0.1:9' },
  // Nothing listens on port 9: every Keycloak call is refused at once.
  keycloak: { issuer: 'https://sso.example.test/realms/acme', server: 'http://127.0.0.1:9', client_id: 'app' }
}
const HAS_PROCFS = existsSync('/proc/self')

t.test('15: config validate refuses an invalid trust_proxy CIDR, naming the entry, and serve refuses it the same way', async (t) => {
  const dir = t.testdir()
  // writeConfig loads what it wrote, as serve would: before the fix that load passed.
  t.throws(() => writeConfig(dir, { ...NOWHERE, server: { trust_proxy: ['10.0.0.0/8', '999.1.1.1/99'] } }), { code: 'ERR_CONFIG_INVALID' })
  const config = join(dir, 'config.yaml')
  for (const command of [['config', 'validate'], ['serve']]) {
    const result = await runInProcess([...command, '-c', config])
    t.equal(result.code, 2, `${command.join(' ')} exits 2`)
    t.equal(result.stderr, [
      `gatehouse: invalid configuration ${config}:`,
      '  server.trust_proxy[1]: expected an IP address, a CIDR range (10.0.0.0/8, fd00::/8), an IPv4 address/netmask, or one of loopback, linklocal, uniquelocal, received string "999.1.1.1/99"',
      ''
    ].join('\n'))
  }
  t.notOk(existsSync(join(dir, 'gatehouse.db')), 'serve stopped before opening anything')
})

t.test('15: a trust_proxy list config validate accepts is one serve starts with', async (t) => {
  const dir = t.testdir()
  writeConfig(dir, { ...NOWHERE, server: { trust_proxy: ['loopback', '10.0.0.0/8', 'fd00::/8', '172.16.0.0/255.240.0.0'] }, log: { level: 'info' } })
  const config = join(dir, 'config.yaml')
  t.equal((await runInProcess(['config', 'validate', '-c', config])).code, 0)
  const serve = startInProcess(['serve', '-c', config])
  await serve.waitForLog('gatehouse listening')
  serve.signal('SIGTERM')
  t.equal((await serve.done).code, 0)
})

t.test('19: serve with its database under /proc exits 1 at once, naming the path and the reason', { skip: !HAS_PROCFS && 'no /proc on this system' }, async (t) => {
  const dir = t.testdir()
  writeConfig(dir, { ...NOWHERE, database: { path: '/proc/gatehouse/x.db' } })
  // A real process: before the fix it spun at 100% CPU inside mkdirSync, so this test process
  // would have hung with it. The kill is only a guard, for that old behaviour.
  const result = await runGatehouse(['serve', '-c', join(dir, 'config.yaml')], { killAfterMs: 30_000 })
  t.equal(result.signal, null, 'it exited by itself')
  t.equal(result.code, 1)
  t.equal(result.stderr, 'gatehouse: cannot open database /proc/gatehouse/x.db: cannot create the directory /proc/gatehouse: ENOENT although /proc exists: its file system (procfs, sysfs or similar) does not accept new entries (ERR_DB_OPEN)\n')
  t.notMatch(result.stdout, 'gatehouse listening')
})

t.test('19: the database directory cannot be made under a regular file: the open fails with the path and why', async (t) => {
  const dir = t.testdir({ blocker: 'a file, not a directory' })
  t.throws(() => openDatabase({ path: join(dir, 'blocker', 'data', 'g.db') }), {
    code: 'ERR_DB_OPEN',
    message: `cannot open database ${join(dir, 'blocker', 'data', 'g.db')}: cannot create the directory ${join(dir, 'blocker', 'data')}: ${join(dir, 'blocker')} is not a directory`
  })
  const nested = join(dir, 'a', 'b', 'c', 'g.db')
  openDatabase({ path: nested }).db.close()
  t.ok(existsSync(nested), 'missing parents are still created, level by level')
})

t.test('19: config validate warns (exit 0) when the database directory cannot be created; no warning otherwise, and nothing is left behind', async (t) => {
  const dir = t.testdir({ blocker: 'a file' })
  const cases: Array<[string, string]> = [
    [join(dir, 'blocker', 'g.db'), `gatehouse: warning: database.path: the directory ${join(dir, 'blocker')} cannot be created: ${join(dir, 'blocker')} is not a directory; serve would fail to start (ERR_DB_OPEN)\n`]
  ]
  if (HAS_PROCFS) {
    cases.push(['/proc/gatehouse/x.db', 'gatehouse: warning: database.path: the directory /proc/gatehouse does not exist and cannot be created: ENOENT although /proc exists: its file system (procfs, sysfs or similar) does not accept new entries; serve would fail to start (ERR_DB_OPEN)\n'])
    cases.push(['/proc/x.db', 'gatehouse: warning: database.path: the directory /proc does not accept new files: ENOENT although /proc exists: its file system (procfs, sysfs or similar) does not accept new entries; serve would fail to start (ERR_DB_OPEN)\n'])
  }
  for (const [path, warning] of cases) {
    writeConfig(dir, { ...NOWHERE, database: { path } }, ONE_RULE)
    const result = await runInProcess(['config', 'validate', '--json', '-c', join(dir, 'config.yaml')])
    t.equal(result.code, 0, `${path}: a warning, not a failure`)
    t.equal(result.stderr, warning)
    t.same((JSON.parse(result.stdout) as { warnings: string[] }).warnings, [warning.replace(/^gatehouse: warning: /, '').trimEnd()])
  }
  writeConfig(dir, { ...NOWHERE, database: { path: './data/new/g.db' } }, ONE_RULE)
  const fine = await runInProcess(['config', 'validate', '-c', join(dir, 'config.yaml')])
  t.equal(fine.code, 0)
  t.equal(fine.stderr, '')
  t.same(readdirSync(dir).sort(), ['blocker', 'config.yaml', 'policies'], 'validate created nothing: no directory, no probe left')
})

t.test('21: gatehouse COMMAND --help prints that command\'s usage; --version prints the version', async (t) => {
  for (const [group, subs] of [['users', ['add', 'passwd', 'disable', 'enable', 'list', 'migrate-to-keycloak']], ['sync', ['status', 'now', 'retry', 'cleanup', 'start']], ['sessions', ['list', 'invalidate', 'logout-user', 'cleanup', 'metrics']]] as const) {
    for (const args of [[group, '--help'], [group, subs[0], '-h'], ['help', group]]) {
      const result = await runInProcess(args)
      t.equal(result.code, 0, args.join(' '))
      t.equal(result.stderr, '')
      const lines = result.stdout.split('\n')
      t.equal(lines[0], `usage: gatehouse ${group} <subcommand> [options]`)
      t.same(lines.filter((l) => /^ {2}[a-z]/.test(l)).map((l) => l.trim().split(/\s+/).slice(0, 2).join(' ')), subs.map((s) => `${group} ${s}`), 'every subcommand of the group, and only those')
    }
  }
  const status = await runInProcess(['status', '--help'])
  t.match(status.stdout, "exit codes of status: 0 mode normal, 3 degraded (Keycloak's mode, or the session store), 4 offline")
  const version = await runInProcess(['--version'])
  t.same([version.code, version.stdout], [0, `${VERSION}\n`])
})

t.test('21: unknown commands and options exit 2 with one line of our own, never parseArgs\'s text', async (t) => {
  const cases: Array<[string[], string]> = [
    [['users', 'add', 'alice', '--frobnicate'], 'gatehouse: unknown option --frobnicate for "users add"; run gatehouse users --help\n'],
    [['sync', 'now', '-x'], 'gatehouse: unknown option -x for "sync now"; run gatehouse sync --help\n'],
    [['status', '--all'], 'gatehouse: option --all does not apply to "status"; run gatehouse status --help\n'],
    [['--frobnicate'], 'gatehouse: unknown option --frobnicate; run gatehouse --help\n'],
    [['frobnicate'], 'gatehouse: unknown command "frobnicate"; run gatehouse --help\n'],
    [['sync', 'restart'], 'gatehouse: unknown sync subcommand "restart": use status, now, retry, cleanup or start; run gatehouse sync --help\n'],
    [['users', 'list', '--json=yes'], 'gatehouse: option --json takes no value; run gatehouse users --help\n']
  ]
  for (const [args, message] of cases) {
    const result = await runInProcess(args)
    t.equal(result.code, 2, args.join(' '))
    t.equal(result.stderr, message)
    t.equal(result.stdout, '')
  }
})

t.test('21: sync retry of no such item, or of one that has not failed, says so and exits 1', async (t) => {
  const dir = t.testdir()
  writeConfig(dir, NOWHERE)
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
  t.teardown(() => db.close())
  const pending = new SyncQueueRepository(db, new KeyRing(TEST_SECRETS.encryption_keys)).enqueue({ username: 'bob', operation: 'user_disable', payload: {} }, Date.now())
  const config = join(dir, 'config.yaml')
  const missing = await runInProcess(['sync', 'retry', 'no-such-item', '-c', config])
  t.same([missing.code, missing.stdout, missing.stderr], [1, '', 'gatehouse: no such sync item "no-such-item"\n'])
  const notFailed = await runInProcess(['sync', 'retry', pending, '-c', config])
  t.same([notFailed.code, notFailed.stdout, notFailed.stderr], [1, '', `gatehouse: sync item ${pending} is pending: only failed or dead items are retried\n`])
})

t.test('21: sessions logout-user of a user nobody knows says so and exits 1', async (t) => {
  const dir = t.testdir()
  writeConfig(dir, NOWHERE)
  const result = await runInProcess(['sessions', 'logout-user', 'nobdoy', '-c', join(dir, 'config.yaml')])
  t.same([result.code, result.stdout, result.stderr], [1, '', 'gatehouse: no such user "nobdoy": no local user and no session of that name\n'])
})

t.test('21: status exits 4 while the mode is offline, after printing the report', async (t) => {
  const dir = t.testdir()
  writeConfig(dir, NOWHERE)
  const result = await runInProcess(['status', '--json', '-c', join(dir, 'config.yaml')])
  t.equal(result.code, 4, result.stderr)
  t.equal((JSON.parse(result.stdout) as { mode: string }).mode, 'offline')
})

t.test('in-process runs read only the environment and directory they are given', async (t) => {
  const dir = t.testdir()
  writeConfig(dir, NOWHERE)
  writeFileSync(join(dir, 'other.yaml'), 'not: [valid')
  const saved = process.env.GATEHOUSE_CONFIG
  process.env.GATEHOUSE_CONFIG = join(dir, 'other.yaml')
  t.teardown(() => { if (saved === undefined) delete process.env.GATEHOUSE_CONFIG; else process.env.GATEHOUSE_CONFIG = saved })
  const result = await runInProcess(['config', 'validate'], { cwd: dir })
  t.equal(result.code, 0, 'the config.yaml of the given cwd, not $GATEHOUSE_CONFIG of this process')
  t.match(result.stdout, `configuration is valid: ${join(dir, 'config.yaml')}`)
})

t.test('22: a test missing a system program is skipped with one line naming it and the install command; with CI=true it fails', async (t) => {
  const dir = t.testdir({ bin: { 'fake-chromium': '#!/bin/sh\n' } })
  const absent: Record<string, ProgramSpec> = { chromium: { envVar: 'CHROMIUM_PATH', commands: ['chromium'], paths: [join(dir, 'nowhere', 'chromium')], debianPackage: 'chromium' } }
  const line = `chromium is not installed (looked for $CHROMIUM_PATH, chromium on PATH, ${join(dir, 'nowhere', 'chromium')}): install it with \`npm run test:deps\` (apt-get install chromium)`
  const points: Array<[string, string, unknown]> = []
  const recorder = { pass: (message: string, extra: { skip: string }) => { points.push(['pass', message, extra]) }, fail: (message: string) => { points.push(['fail', message, null]) } }

  t.equal(requireProgram(recorder, 'chromium', { env: { PATH: join(dir, 'empty') }, programs: absent }), null)
  t.same(points, [['pass', 'chromium', { skip: line }]], 'locally: one skipped point carrying the line')
  points.length = 0
  t.equal(requireProgram(recorder, 'chromium', { env: { PATH: join(dir, 'empty'), CI: 'true' }, programs: absent }), null)
  t.same(points, [['fail', `${line}; CI=true runs every test, so this is a failure`, null]], 'in CI: a failure')

  points.length = 0
  chmodSync(join(dir, 'bin', 'fake-chromium'), 0o755)
  t.equal(requireProgram(recorder, 'chromium', { env: { CHROMIUM_PATH: join(dir, 'bin', 'fake-chromium'), CI: 'true' }, programs: absent }), join(dir, 'bin', 'fake-chromium'), 'found: its path, and nothing recorded')
  t.same(points, [])
})
