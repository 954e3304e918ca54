import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { TEST_SECRETS } from '../fixtures/gatehouse.ts'

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url))

/** Starts `gatehouse serve` as a real process and resolves once it logged its listen URLs. */
async function serve (t: { teardown: (fn: () => void) => void }, dir: string, upstreamUrl: string, shutdownMs: number): Promise<{ child: ChildProcess, proxyUrl: string, adminUrl: string, output: () => string, exited: Promise<number | null> }> {
  const path = join(dir, 'config.yaml')
  mkdirSync(join(dir, 'policies'), { recursive: true })
  writeFileSync(path, stringify({
    server: { host: '127.0.0.1', port: 0, shutdown_timeout_ms: shutdownMs },
    admin: { host: '127.0.0.1', port: 0 },
    upstream: { url: upstreamUrl },
    // Keycloak is nowhere: start-up must not care.
    keycloak: { issuer: 'https://sso.example.test/realms/acme', server: 'http://127.0.0.1:9', client_id: 'app' },
    secrets: TEST_SECRETS,
    policies: { dir: './policies', default: 'public' },
    database: { path: './g.db' }
  }))
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '-c', path], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const listening = await new Promise<{ proxy: string, admin: string }>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      for (const line of out.split('\n')) {
        if (line.includes('"gatehouse listening"')) resolve(JSON.parse(line) as { proxy: string, admin: string })
      }
    })
    child.stderr?.on('data', (chunk: Buffer) => { out += chunk.toString() })
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${out}`)))
  })
  return { child, proxyUrl: listening.proxy, adminUrl: listening.admin, output: () => out, exited }
}

t.test('SIGTERM: new connections are refused, in-flight requests finish, the process exits 0', async (t) => {
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  const arrived = new Promise<void>((resolve) => {
    upstream.handle((req, res) => {
      if (req.url !== '/slow') return false
      resolve()
      void held.then(() => res.end('finished'))
      return true
    })
  })
  const gatehouse = await serve(t, t.testdir(), upstream.url, 10_000)
  t.equal((await fetch(`${gatehouse.adminUrl}/readyz`)).status, 200)

  const inFlight = rawRequest(gatehouse.proxyUrl, '/slow')
  await arrived
  gatehouse.child.kill('SIGTERM')
  await t.rejects(waitForRefusal(gatehouse.proxyUrl), { code: 'ECONNREFUSED' }, 'the listener stopped accepting')
  release()
  const res = await inFlight
  t.equal(res.status, 200)
  t.equal(res.body, 'finished', 'the in-flight request completed')
  t.equal(await gatehouse.exited, 0)
  t.match(gatehouse.output(), '"msg":"shutting down"')
  t.match(gatehouse.output(), '"msg":"gatehouse stopped"')
})

t.test('SIGTERM: a request still running after the grace period is cut and the process still exits', async (t) => {
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const arrived = new Promise<void>((resolve) => {
    upstream.handle((req) => { if (req.url === '/forever') resolve(); return req.url === '/forever' })
  })
  const gatehouse = await serve(t, t.testdir(), upstream.url, 300)
  const inFlight = rawRequest(gatehouse.proxyUrl, '/forever')
  await arrived
  gatehouse.child.kill('SIGINT')
  await t.rejects(inFlight, { code: 'ECONNRESET' })
  t.equal(await gatehouse.exited, 0)
  t.match(gatehouse.output(), 'shutdown grace period over; closing remaining connections')
})

/** Opens new connections until one is refused (the signal reaches the child a moment later). */
async function waitForRefusal (url: string): Promise<never> {
  for (;;) {
    try {
      await rawRequest(url, '/probe')
    } catch (err) {
      // A probe that reached the accept queue as the listener closed is reset, not refused:
      // the race is the kernel's; the next probe finds the port closed.
      if ((err as { code?: string }).code !== 'ECONNRESET') throw err
    }
  }
}
