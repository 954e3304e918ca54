// Issue 14: `kill -9` of a sidecar under load loses no committed session, with either store:
// a login answered with its cookie was written to SQLite (and to Redis, or to the outbox)
// before the answer left.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { stringify } from 'yaml'
import { openDatabase } from '../../src/store/db.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { TEST_SECRETS } from '../fixtures/gatehouse.ts'
import { startRedis } from '../fixtures/redis.ts'
import { addLocalUser, formLogin } from '../fixtures/sessions.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url))

/** `gatehouse serve` as a real process; resolves once it logged its listen URLs. */
async function serve (t: { teardown: (fn: () => void) => void }, path: string): Promise<{ child: ChildProcess, proxyUrl: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '-c', path], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  const listening = await new Promise<{ proxy: string }>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      for (const line of out.split('\n')) if (line.includes('"gatehouse listening"')) resolve(JSON.parse(line) as { proxy: string })
    })
    child.stderr?.on('data', (chunk: Buffer) => { out += chunk.toString() })
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${out}`)))
  })
  return { child, proxyUrl: listening.proxy }
}

for (const store of ['sqlite', 'redis'] as const) {
  t.test(`${store}: kill -9 of a sidecar under load loses no committed session`, async (t) => {
    const redis = store === 'redis' ? await startRedis(t) : null
    if (store === 'redis' && redis === null) return
    const upstream = await startEchoUpstream()
    t.teardown(() => upstream.close())
    const dir = t.testdir()
    mkdirSync(join(dir, 'policies'), { recursive: true })
    const path = join(dir, 'config.yaml')
    writeFileSync(path, stringify({
      server: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      upstream: { url: upstream.url },
      // Keycloak is nowhere: logins are local.
      keycloak: { issuer: 'https://sso.example.test/realms/acme', server: 'http://127.0.0.1:9', client_id: 'app', timeout_ms: 200 },
      auth: { primary: 'local' },
      security: { max_failed_attempts: 1000 },
      secrets: TEST_SECRETS,
      policies: { dir: './policies', default: 'authenticated' },
      database: { path: './g.db' },
      store: redis === null ? { sessions: 'sqlite' } : { sessions: 'redis', redis: { url: redis.url } }
    }))
    const { db } = openDatabase({ path: join(dir, 'g.db') })
    await addLocalUser(db, 'erin', 'erin-local-password')
    db.close()

    const first = await serve(t, path)
    const committed: string[] = []
    let killed = false
    // Four browsers logging in without pause; the sidecar dies under them.
    const load = Promise.all(Array.from({ length: 4 }, async () => {
      while (!killed) {
        const browser = new BrowserClient()
        try {
          const done = await formLogin(browser, first.proxyUrl, 'erin', 'erin-local-password', '/hello', false)
          const cookie = browser.cookie(first.proxyUrl, 'gatehouse_session')
          if (done.status === 303 && cookie !== undefined) committed.push(cookie.value)
        } catch {
          // Cut off by the kill: never answered, so never committed.
        }
      }
    }))
    while (committed.length < 12) await new Promise((resolve) => setImmediate(resolve))
    first.child.kill('SIGKILL')
    killed = true
    await load
    const second = await serve(t, path)
    const answers = await Promise.all(committed.map(async (cookie) => {
      const browser = new BrowserClient()
      browser.setCookie(second.proxyUrl, 'gatehouse_session', cookie)
      return (await browser.get(`${second.proxyUrl}/hello`, { follow: false })).status
    }))
    t.ok(committed.length >= 12, `${committed.length} logins answered before the kill`)
    t.same(answers, committed.map(() => 200), 'every one of them is valid after the restart')
  })
}
