// `npm run bench:profile`: where a bearer request's CPU goes. Gatehouse (as shipped, access
// log on, its output to a file) is profiled (bench/profiler-hook.mjs) while autocannon sends
// it the bench's load (1,000 distinct tokens), after a warm-up that verified every token; the
// bare @fastify/http-proxy gets the same load under the same profiler. Prints both processes' top functions by self time, in µs per request, and
// Gatehouse's functions that the bare proxy does not run at all: the cost of authentication.
// BENCH_DURATION (seconds of load, default 10) and BENCH_CONNECTIONS (default 50) tune it;
// BENCH_PROFILE_MAIN names another build's entry to profile instead (the before of a change).
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { SourceMap, type SourceMapPayload } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon, { type Request as LoadRequest } from 'autocannon'
import { stringify } from 'yaml'
import { startKeycloakStandin } from '../test/fixtures/keycloak-standin.ts'

const DURATION = Number(process.env.BENCH_DURATION ?? 10)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const TOP = 25
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url))
const work = mkdtempSync(join(tmpdir(), 'gatehouse-profile-'))
const children: ChildProcess[] = []

interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number, columnNumber: number } }
interface Profile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

/** Starts a node process under the profiler; resolves with its first JSON line (ports). */
interface Profiled { child: ChildProcess, first: Record<string, unknown>, out: string }

async function start (name: string, args: string[]): Promise<Profiled> {
  const out = join(work, `${name}.cpuprofile`)
  const logPath = join(work, `${name}.log`)
  const fd = openSync(logPath, 'w')
  const env = { ...process.env, GATEHOUSE_PROFILE_OUT: out }
  const child = spawn(process.execPath, ['--max-semi-space-size=16', '--import', here('./profiler-hook.mjs'), ...args], { stdio: ['ignore', fd, 'inherit'], env })
  closeSync(fd)
  children.push(child)
  for (let i = 0; ; i++) {
    for (const line of readFileSync(logPath, 'utf8').split('\n').slice(0, -1)) {
      const parsed = JSON.parse(line) as Record<string, unknown>
      if (parsed.port !== undefined || parsed.msg === 'gatehouse listening') return { child, first: parsed, out }
    }
    if (child.exitCode !== null || i > 1000) throw new Error(`${name} did not start`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Profiles `proc` while `work` runs; stops the process afterwards. */
async function profileDuring (proc: Profiled, work: () => Promise<number>): Promise<{ profile: Profile, requests: number }> {
  proc.child.kill('SIGUSR2')
  const requests = await work()
  proc.child.kill('SIGUSR2')
  for (let i = 0; !existsSync(proc.out); i++) {
    if (i > 1000) throw new Error(`no profile at ${proc.out}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  proc.child.kill('SIGTERM')
  return { profile: JSON.parse(readFileSync(proc.out, 'utf8')) as Profile, requests }
}

/**
 * Where a frame's code came from: a frame in the bundle is traced back through its source map
 * to the module it was bundled from, so that Gatehouse's undici and the bare proxy's undici
 * are the same functions in the comparison.
 */
function sourceOf (frame: ProfileNode['callFrame']): { url: string, line: number } {
  if (!frame.url.endsWith('/dist/bundle/program.js')) return { url: frame.url, line: frame.lineNumber }
  const mapPath = `${fileURLToPath(frame.url)}.map`
  let map = bundleMaps.get(mapPath)
  if (map === undefined) {
    map = new SourceMap(JSON.parse(readFileSync(mapPath, 'utf8')) as SourceMapPayload)
    bundleMaps.set(mapPath, map)
  }
  const entry = map.findEntry(frame.lineNumber, frame.columnNumber) as { originalSource?: string, originalLine?: number }
  if (entry.originalSource === undefined || entry.originalLine === undefined) return { url: frame.url, line: frame.lineNumber }
  return { url: new URL(entry.originalSource, frame.url).href, line: entry.originalLine }
}
const bundleMaps = new Map<string, SourceMap>()
/** A function's name beside its place, as printed (the unbundled name where both are seen). */
const names = new Map<string, string>()

/** Self time per function (name, file, line) in µs, idle and the profiler's own time left out. */
function selfTimes (profile: Profile): Map<string, number> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const times = new Map<string, number>()
  for (const [i, id] of profile.samples.entries()) {
    const frame = byId.get(id)?.callFrame
    if (frame === undefined || frame.functionName === '(idle)' || frame.functionName === '(program)') continue
    const { url, line } = sourceOf(frame)
    const file = url === '' ? '' : url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(dist|src)\//, 'gatehouse/').replace(/^node:/, 'node:')
    // The bundle renames some functions (Request2), so a function is its place in its source.
    const name = frame.functionName === '' ? '(anonymous)' : frame.functionName
    const key = file === '' ? name : `${file}:${line + 1}`
    if (!names.has(key) || url === frame.url) names.set(key, `${name} ${key}`)
    times.set(key, (times.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  return times
}

function print (title: string, rows: Array<[string, number]>, requests: number): void {
  process.stdout.write(`\n${title}\n`)
  for (const [key, micros] of rows.slice(0, TOP)) process.stdout.write(`${(micros / requests).toFixed(2).padStart(7)} µs  ${names.get(key) ?? key}\n`)
}

try {
  const standin = await startKeycloakStandin({ accessTokenTtl: 3600 })
  const upstream = spawn(process.execPath, [here('./upstream.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(upstream)
  const upstreamPort = await new Promise<number>((resolve) => upstream.stdout.once('data', (d: Buffer) => { resolve((JSON.parse(d.toString()) as { port: number }).port) }))
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}`
  const config = join(work, 'gatehouse.yaml')
  writeFileSync(config, stringify({
    server: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    policies: { dir: here('../policies') },
    secrets: { encryption_keys: [randomBytes(32).toString('hex')], cookie_keys: [randomBytes(32).toString('hex')] },
    upstream: { url: upstreamUrl },
    keycloak: { issuer: standin.issuer, server: standin.baseUrl, client_id: standin.clientId },
    database: { path: join(work, 'gatehouse.db') }
  }))
  const users = standin.users.map((u) => u.username)
  const tokens: string[] = []
  for (let i = 0; i < 1000; i++) tokens.push(await standin.mintAccessToken({ jti: `profile-${i}` }, { username: users[i % users.length] }))

  const load = async (url: string, duration: number): Promise<number> => {
    let next = 0
    const requests = [{ setupRequest: (req: LoadRequest): LoadRequest => ({ ...req, headers: { ...req.headers, authorization: `Bearer ${tokens[next++ % tokens.length]}` } }) }]
    return (await autocannon({ url: `${url}/bench`, connections: CONNECTIONS, duration, requests })).requests.total
  }
  const measure = async (proc: Profiled, url: string): Promise<{ profile: Profile, requests: number }> => {
    await load(url, 3) // warm-up: JIT, connection pools, every token verified once
    return await profileDuring(proc, async () => await load(url, DURATION))
  }

  // BENCH_PROFILE_MAIN=/other/build/entry.js profiles another build (a before, for an after).
  const gatehouse = await start('gatehouse', [process.env.BENCH_PROFILE_MAIN ?? here('../dist/bundle/gatehouse.js'), 'serve', '-c', config])
  const gatehouseUrl = String(gatehouse.first.proxy)
  for (let i = 0; (await fetch(`${gatehouseUrl}/bench`, { headers: { authorization: `Bearer ${tokens[0]}` } })).status !== 200; i++) {
    if (i > 100) throw new Error('gatehouse never accepted the tokens')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const { profile: gatehouseProfile, requests: gatehouseRequests } = await measure(gatehouse, gatehouseUrl)
  const gatehouseTimes = selfTimes(gatehouseProfile)

  const bare = await start('bare', [here('./bare-proxy.mjs'), upstreamUrl])
  const { profile: bareProfile, requests: bareRequests } = await measure(bare, `http://127.0.0.1:${String(bare.first.port)}`)
  const bareTimes = selfTimes(bareProfile)
  await standin.close()

  const total = (times: Map<string, number>, requests: number): string => ([...times.values()].reduce((a, b) => a + b, 0) / requests).toFixed(1)
  process.stdout.write(`Profiled ${DURATION} s of bearer load, ${CONNECTIONS} connections, 1,000 tokens: Gatehouse ${total(gatehouseTimes, gatehouseRequests)} µs of samples a request, the bare proxy ${total(bareTimes, bareRequests)} µs (the profiler adds its own share to both).\n`)
  const sorted = (times: Map<string, number>): Array<[string, number]> => [...times].sort((x, y) => y[1] - x[1])
  print('Gatehouse, top functions by self time a request:', sorted(gatehouseTimes), gatehouseRequests)
  print('bare @fastify/http-proxy, top functions:', sorted(bareTimes), bareRequests)
  // What Gatehouse spends more than the bare proxy, function by function (per request).
  const extra = new Map<string, number>()
  for (const [key, micros] of gatehouseTimes) extra.set(key, micros / gatehouseRequests - (bareTimes.get(key) ?? 0) / bareRequests)
  print('Gatehouse over the bare proxy, by function:', sorted(extra).map(([k, v]) => [k, v * gatehouseRequests]), gatehouseRequests)
} finally {
  for (const child of children) child.kill('SIGTERM')
  rmSync(work, { recursive: true, force: true })
}
