import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { runInProcess } from '../fixtures/cli.ts'
import { keycloakSettings, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { addLocalUser, formLogin } from '../fixtures/sessions.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { openDatabase } from '../../src/store/db.ts'

// `server.workers: 2` as an operator runs it: one `gatehouse serve` process, the primary,
// forking two workers that share the listeners (Node's cluster module) and the SQLite file.

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url))

interface Cluster {
  child: ChildProcess
  urls: { proxy: string, admin: string }
  /** Every line written to standard output so far, parsed. */
  lines: Array<Record<string, unknown>>
  /** Lines of standard output that were not one whole JSON object (none, when writes stay whole). */
  broken: string[]
  /** Resolves with the first line `match` accepts, already written or still to come. */
  waitFor: (match: (line: Record<string, unknown>) => boolean) => Promise<Record<string, unknown>>
  exited: Promise<number | null>
  stderr: () => string
}

function startCluster (t: Test, configPath: string): Cluster {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '-c', configPath], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: Array<Record<string, unknown>> = []
  const broken: string[] = []
  const waiters: Array<{ match: (line: Record<string, unknown>) => boolean, resolve: (line: Record<string, unknown>) => void }> = []
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (text) => {
    let line: Record<string, unknown>
    try {
      line = JSON.parse(text) as Record<string, unknown>
    } catch {
      broken.push(text)
      return
    }
    lines.push(line)
    for (const waiter of [...waiters]) {
      if (waiter.match(line)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(line)
      }
    }
  })
  // 'close', not 'exit': the lines still in the pipe are read by then.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const waitFor = async (match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
    const seen = lines.find(match)
    if (seen !== undefined) return seen
    return await new Promise((resolve, reject) => {
      waiters.push({ match, resolve })
      void exited.then((code) => reject(new Error(`serve exited with ${String(code)}: ${stderr}`)))
    })
  }
  return { child, urls: { proxy: '', admin: '' }, lines, broken, waitFor, exited, stderr: () => stderr }
}

async function listening (cluster: Cluster): Promise<Cluster> {
  const line = await cluster.waitFor((l) => l.msg === 'gatehouse cluster listening')
  cluster.urls = { proxy: String(line.proxy), admin: String(line.admin) }
  return cluster
}

/** The worker and pid that answered one `/status` call on a new connection. */
async function whoAnswers (adminUrl: string): Promise<{ pid: number, worker: number | null, workers: number }> {
  const res = await rawRequest(adminUrl, '/status')
  return (JSON.parse(res.body) as { process: { pid: number, worker: number | null, workers: number } }).process
}

/** The pids answering `count` calls, each on its own connection (the primary deals them round-robin). */
async function answeringPids (adminUrl: string, count: number): Promise<Set<number>> {
  const pids = new Set<number>()
  for (let i = 0; i < count; i++) pids.add((await whoAnswers(adminUrl)).pid)
  return pids
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Sum of every sample of one counter in an exposition text. */
function counterTotal (text: string, name: string): number {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
}

t.test('two workers on one port: both answer, share sessions and revocations, sum their metrics, and one that dies is replaced', async (t) => {
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const dir = t.testdir()
  writeConfig(dir, { ...keycloakSettings(standin, upstream.url), server: { workers: 2 }, auth: { primary: 'local' }, log: { level: 'info' }, sync: { enabled: false }, policies: { watch: false } })
  const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
  await addLocalUser(db, 'carol', 'carol-password')
  db.close()

  const cluster = await listening(startCluster(t, join(dir, 'config.yaml')))
  // Each worker logs its own line (batched), the primary its own once both told it over IPC:
  // their order on standard output is not fixed.
  for (const slot of [1, 2]) await cluster.waitFor((l) => l.msg === 'gatehouse listening' && l.worker === slot)
  t.same(cluster.lines.filter((l) => l.msg === 'gatehouse listening').map((l) => l.worker).sort(), [1, 2], 'each worker bound the listeners, once')
  const pids = await answeringPids(cluster.urls.admin, 6)
  t.equal(pids.size, 2, 'connections are spread over both workers')
  t.match(await whoAnswers(cluster.urls.admin), { workers: 2, worker: /^[12]$/ })

  // A session made through one worker is good on both: each of these requests is a new connection.
  const browser = new BrowserClient()
  t.equal((await formLogin(browser, cluster.urls.proxy, 'carol', 'carol-password')).status, 200)
  const jar = browser.cookies.get(new URL(cluster.urls.proxy).host) ?? new Map()
  const cookie = [...jar].map(([name, c]) => `${name}=${String(c.value)}`).join('; ')
  const statuses: number[] = []
  for (let i = 0; i < 6; i++) statuses.push((await rawRequest(cluster.urls.proxy, '/hello', { headers: { cookie } })).status)
  t.same(statuses, [200, 200, 200, 200, 200, 200], 'the session works on every worker')

  // Ended from the CLI (another process): refused by both workers at their next request.
  const ended = await runInProcess(['sessions', 'logout-user', 'carol', '-c', join(dir, 'config.yaml')])
  t.equal(ended.code, 0, ended.stderr)
  const after: number[] = []
  for (let i = 0; i < 4; i++) after.push((await rawRequest(cluster.urls.proxy, '/hello', { headers: { cookie, accept: 'application/json' } })).status)
  t.same(after, [401, 401, 401, 401], 'no worker kept the ended session in its cache')

  // Every scrape, whichever worker takes it, counts the requests of both.
  const proxied = counterTotal(await (await rawRequest(cluster.urls.admin, '/metrics')).body, 'gatehouse_requests_total')
  t.ok(proxied >= 10, `the first scrape counts both workers' requests (${proxied})`)
  for (let i = 0; i < 3; i++) {
    t.equal(counterTotal((await rawRequest(cluster.urls.admin, '/metrics')).body, 'gatehouse_requests_total'), proxied, 'the same total from each worker')
  }
  t.match((await rawRequest(cluster.urls.admin, '/metrics')).body, /^gatehouse_build_info\{version="[^"]+"\} 1$/m, 'a gauge is not multiplied by the workers')

  // SIGHUP to the primary: every worker reloads its policies (the file watch is off here).
  const token = await standin.mintAccessToken({}, { username: 'alice' })
  const bearer = { authorization: `Bearer ${token}` }
  const before: number[] = []
  for (let i = 0; i < 4; i++) before.push((await rawRequest(cluster.urls.proxy, '/closed/x', { headers: bearer })).status)
  t.same(before, [200, 200, 200, 200], 'open before the reload')
  writeFileSync(join(dir, 'policies', 'app.yaml'), 'rules:\n  - name: closed\n    paths: [/closed/**]\n    allow: deny\n')
  cluster.child.kill('SIGHUP')
  for (const slot of [1, 2]) await cluster.waitFor((l) => l.msg === 'policies reloaded' && l.worker === slot)
  const closed: number[] = []
  for (let i = 0; i < 4; i++) closed.push((await rawRequest(cluster.urls.proxy, '/closed/x', { headers: bearer })).status)
  t.same(closed, [403, 403, 403, 403], 'both workers apply the new policies')

  // A worker killed outright is replaced in its slot; the other goes on answering meanwhile.
  const victim = await whoAnswers(cluster.urls.admin)
  process.kill(victim.pid, 'SIGKILL')
  await cluster.waitFor((l) => l.msg === 'worker exited; starting another in its place' && l.worker === victim.worker)
  const replaced = await cluster.waitFor((l) => l.msg === 'gatehouse listening' && l.worker === victim.worker && l.pid !== victim.pid)
  t.ok(alive(Number(replaced.pid)), 'a new worker took the slot')
  t.notOk((await answeringPids(cluster.urls.admin, 6)).has(victim.pid), 'the dead one answers nothing')

  const workerPids = cluster.lines.filter((l) => l.msg === 'gatehouse listening').map((l) => Number(l.pid)).filter(alive)
  cluster.child.kill('SIGTERM')
  t.equal(await cluster.exited, 0, 'SIGTERM stops the cluster cleanly')
  t.same(workerPids.filter(alive), [], 'no worker outlives the primary')
  t.match(cluster.lines.filter((l) => l.msg === 'gatehouse stopped').map((l) => l.worker).sort(), [1, 2], 'each worker stopped gracefully')
  t.same(cluster.broken, [], 'every line on the shared standard output is whole')
})

t.test('a worker that cannot bind stops the cluster with its error and exit code', async (t) => {
  const busy = createServer()
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => busy.close())
  const { port } = busy.address() as { port: number }
  const dir = t.testdir()
  writeConfig(dir, { upstream: { url: 'http://127.0.0.1:9' }, keycloak: { issuer: 'https://sso.example.test/realms/acme', server: 'http://127.0.0.1:9', client_id: 'app' }, server: { workers: 2, port }, log: { level: 'info' } })
  const cluster = startCluster(t, join(dir, 'config.yaml'))
  t.equal(await cluster.exited, 1)
  t.match(cluster.stderr(), /EADDRINUSE/, 'the worker said why')
  t.ok(cluster.lines.some((l) => l.msg === 'worker failed to start; stopping the cluster'), 'the primary said what it did')
})
