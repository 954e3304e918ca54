import t from 'tap'
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { loadPolicies, matchRule } from '../../../src/authz/policy.ts'
import { PolicyStore, type ReloadOutcome } from '../../../src/authz/policy-store.ts'
import { createLogger } from '../../../src/log.ts'
import { manualClock } from '../../fixtures/clock.ts'

const RULE = (allow: string): string => `rules:\n  - name: reports\n    path: /reports/**\n    allow: ${allow}\n`

function rig (t: { testdir: () => string }, files: Record<string, string> = { 'app.yaml': RULE('deny') }) {
  const dir = join(t.testdir(), 'policies')
  mkdirSync(dir, { recursive: true })
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger({ level: 'debug', destination: new Writable({ write (chunk: Buffer, _e, done) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); done() } }) })
  const clock = manualClock(Date.UTC(2026, 0, 1))
  const load = (): ReturnType<typeof loadPolicies> => loadPolicies(dir, 'authenticated')
  const store = new PolicyStore(load(), { load, clock, log, debounceMs: 0 })
  const outcomes: ReloadOutcome[] = []
  store.onReload((o) => outcomes.push(o))
  return { dir, store, clock, lines, outcomes, decision: () => matchRule(store.current, 'GET', '/reports/x').requirement.kind }
}

/**
 * Keeps this process alive while a test waits for a watched reload: the watch and its debounce
 * timer never hold the event loop themselves (in `serve`, the listeners do). Not a sleep.
 */
function holdOpen (t: { teardown: (fn: () => void) => void }): void {
  const timer = setInterval(() => {}, 60_000)
  t.teardown(() => { clearInterval(timer) })
}

/** Resolves with the next reload's outcome. */
const nextReload = (store: PolicyStore): Promise<ReloadOutcome> => new Promise((resolve) => { const off = store.onReload((o) => { off(); resolve(o) }) })

t.test('a valid edit is put in force; the version is the content hash, the load time the clock\'s', async (t) => {
  const { dir, store, clock, decision, lines } = rig(t)
  const before = store.current
  t.equal(decision(), 'deny')
  t.match(before.version, /^sha256:[0-9a-f]{16}$/)
  writeFileSync(join(dir, 'app.yaml'), RULE('public'))
  clock.advance(60_000)
  const outcome = store.reload('signal')
  t.same({ result: outcome.result, trigger: outcome.trigger, problems: outcome.problems }, { result: 'success', trigger: 'signal', problems: [] })
  t.not(store.current, before)
  t.not(store.current.version, before.version)
  t.equal(decision(), 'public')
  t.equal(store.loadedAt, Date.UTC(2026, 0, 1) + 60_000)
  t.match(store.status(), { version: store.current.version, loaded_at: '2026-01-01T00:01:00.000Z', files: ['app.yaml'], rules: 1, roles: 0, watching: false, last_reload: { trigger: 'signal', result: 'success', problems: [] } })
  t.match(lines.find((l) => l.msg === 'policies reloaded'), { level: 30, trigger: 'signal', version: store.current.version, previous: before.version })
})

t.test('a broken edit changes nothing and is reported with file and line', async (t) => {
  const { dir, store, decision, lines, outcomes } = rig(t, { 'app.yaml': RULE('deny'), 'roles.yaml': 'roles:\n  a: { inherits: [b] }\n  b: {}\n' })
  const before = store.current
  writeFileSync(join(dir, 'app.yaml'), RULE('everyone'))
  const outcome = store.reload('watch')
  t.equal(outcome.result, 'failure')
  t.same(outcome.problems, [
    'app.yaml (line 4): rules[0].allow: expected public, authenticated or deny, received string "everyone"'
  ])
  t.equal(store.current, before, 'the running set stays')
  t.equal(decision(), 'deny')
  const logged = lines.find((l) => l.msg === 'policy reload rejected; the running policies stay')
  t.match(logged, { level: 50, trigger: 'watch', version: before.version, problems: outcome.problems })
  t.same(outcomes.map((o) => o.result), ['failure'], 'listeners (the metric) hear of it')
  t.match(store.status().last_reload, { result: 'failure', problems: outcome.problems })
  // A cycle anywhere rejects the whole set, the other files' good rules included.
  writeFileSync(join(dir, 'app.yaml'), RULE('public'))
  writeFileSync(join(dir, 'roles.yaml'), 'roles:\n  a: { inherits: [b] }\n  b: { inherits: [c] }\n  c: { inherits: [a] }\n')
  t.match(store.reload('signal'), { result: 'failure', problems: ['roles.yaml (line 2): roles.a.inherits: expected no inheritance cycle (a role cannot inherit itself, directly or through others), received the cycle a → b → c → a'] })
  t.equal(decision(), 'deny')
  rmSync(dir, { recursive: true })
  t.match(store.reload('signal'), { result: 'failure', problems: [`policy directory ${dir} does not exist (policies.dir)`] }, 'a vanished directory is a failure too')
  t.equal(store.current, before)
})

t.test('the same content again is unchanged: no swap, no new load time', async (t) => {
  const { store, clock } = rig(t)
  const before = store.current
  clock.advance(1000)
  t.equal(store.reload('manual').result, 'unchanged')
  t.equal(store.current, before)
  t.equal(store.loadedAt, Date.UTC(2026, 0, 1))
})

t.test('the directory watch reloads after an editor\'s save, written in place or renamed over the file', async (t) => {
  const { dir, store, decision } = rig(t)
  holdOpen(t)
  store.watch()
  t.teardown(() => store.close())
  t.equal(store.status().watching, true)
  let reloaded = nextReload(store)
  writeFileSync(join(dir, 'app.yaml'), RULE('public'))
  t.equal((await reloaded).result, 'success')
  t.equal(decision(), 'public')
  // vim, VS Code and most editors with atomic saves: write a temporary file, rename it over.
  reloaded = nextReload(store)
  writeFileSync(join(dir, '.app.yaml.swp'), RULE('authenticated'))
  renameSync(join(dir, '.app.yaml.swp'), join(dir, 'app.yaml'))
  let outcome = await reloaded
  while (outcome.result === 'unchanged') outcome = await nextReload(store)
  t.equal(outcome.result, 'success')
  t.equal(outcome.trigger, 'watch')
  t.equal(decision(), 'authenticated')
})

t.test('a Kubernetes ConfigMap volume: the ..data symlink is swapped, and the watch sees it', async (t) => {
  const root = t.testdir()
  const dir = join(root, 'volume')
  mkdirSync(join(dir, '..v1'), { recursive: true })
  writeFileSync(join(dir, '..v1', 'app.yaml'), RULE('deny'))
  symlinkSync('..v1', join(dir, '..data'))
  symlinkSync('..data/app.yaml', join(dir, 'app.yaml'))
  const load = (): ReturnType<typeof loadPolicies> => loadPolicies(dir, 'authenticated')
  const store = new PolicyStore(load(), { load, clock: manualClock(), log: createLogger({ level: 'silent' }), debounceMs: 0 })
  holdOpen(t)
  store.watch()
  t.teardown(() => store.close())
  const reloaded = nextReload(store)
  mkdirSync(join(dir, '..v2'))
  writeFileSync(join(dir, '..v2', 'app.yaml'), RULE('public'))
  symlinkSync('..v2', join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  let outcome = await reloaded
  while (outcome.result === 'unchanged') outcome = await nextReload(store)
  t.equal(outcome.result, 'success')
  t.equal(matchRule(store.current, 'GET', '/reports').requirement.kind, 'public')
  t.same(store.current.files, ['app.yaml'], 'the ..data and ..v2 entries are not policy files')
})

t.test('a directory replaced as a whole is followed from the next reload on', async (t) => {
  const { dir, store, decision } = rig(t)
  holdOpen(t)
  store.watch()
  t.teardown(() => store.close())
  renameSync(dir, join(dir, '..', 'old'))
  mkdirSync(dir)
  writeFileSync(join(dir, 'app.yaml'), RULE('public'))
  let outcome = store.reload('signal')
  t.equal(outcome.result, 'success')
  t.equal(decision(), 'public')
  t.equal(store.status().watching, true)
  const reloaded = nextReload(store)
  writeFileSync(join(dir, 'app.yaml'), RULE('authenticated'))
  outcome = await reloaded
  while (outcome.result === 'unchanged') outcome = await nextReload(store)
  t.equal(outcome.trigger, 'watch', 'the new directory is the one watched')
  t.equal(decision(), 'authenticated')
  store.close()
  t.equal(store.status().watching, false)
})
