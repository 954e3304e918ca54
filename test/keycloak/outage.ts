import type { Test } from 'tap'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { manualClock, type ManualClock } from '../fixtures/clock.ts'
import type { RealKeycloak } from '../fixtures/keycloak-real.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { gatehouseFor, keycloakLogin } from './helpers.ts'

/** Requests per phase and how many run at once: bounded, loopback only. */
const REQUESTS = 120
const CONCURRENCY = 8

interface PhaseResult { failures: string[], p99Ms: number, modes: Set<string> }

/**
 * Sends REQUESTS requests, CONCURRENCY at a time, alternating a bearer token and a session
 * cookie, and reports every one that was not a 200 (a failure for valid credentials).
 */
async function load (proxyUrl: string, bearerTokens: string[], cookie: string, upstream: { requests: Array<{ url: string, headers: Record<string, unknown> }> }): Promise<PhaseResult> {
  const failures: string[] = []
  const latencies: number[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    for (let i = next++; i < REQUESTS; i = next++) {
      const headers = i % 2 === 0 ? { authorization: `Bearer ${bearerTokens[i % bearerTokens.length] as string}` } : { cookie, accept: 'application/json' }
      const began = performance.now()
      try {
        const res = await rawRequest(proxyUrl, `/load/${i}`, { headers })
        if (res.status !== 200) failures.push(`#${i} ${i % 2 === 0 ? 'bearer' : 'session'}: ${res.status}`)
      } catch (err) {
        failures.push(`#${i}: ${(err as Error).message}`)
      }
      latencies.push(performance.now() - began)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  latencies.sort((a, b) => a - b)
  const modes = new Set(upstream.requests.slice(-REQUESTS).map((r) => String(r.headers['x-auth-request-mode'])))
  return { failures, p99Ms: latencies[Math.floor(latencies.length * 0.99)] ?? 0, modes }
}

/** What the login route shows: Gatehouse's own form, or a redirect to Keycloak. */
async function loginPage (proxyUrl: string): Promise<'local form' | 'keycloak' | string> {
  const res = await rawRequest(proxyUrl, '/_gatehouse/login?rd=%2F', { headers: { accept: 'text/html' } })
  if (res.status === 200 && /<form[^>]*method="post"/i.test(res.body) && res.body.includes('name="password"')) return 'local form'
  if (res.status === 302 && String(res.headers.location).includes('/protocol/openid-connect/auth')) return 'keycloak'
  return `${res.status}`
}

async function closeCircuit (clock: ManualClock, app: { keycloak: { health: { round: () => Promise<void> }, pool: { reachable: () => boolean } } }): Promise<boolean> {
  clock.advance(61_000)
  await app.keycloak.health.round()
  return app.keycloak.pool.reachable()
}

/**
 * Keycloak frozen (SIGSTOP: connections accepted, never answered) and then killed (SIGKILL:
 * refused) while bearer and session requests run: valid credentials never fail, and the
 * login page falls back to Gatehouse's local form. The p99 latency of each phase is printed as
 * a comment, never asserted (a bench run against the real Keycloak is still to be written).
 */
export async function outageTests (t: Test, kc: RealKeycloak): Promise<void> {
  /**
   * A signed-in session and bearer tokens on a Gatehouse whose clock the test moves: the
   * session's access token runs out on it (so its requests need a refresh Keycloak cannot
   * give), while the bearer tokens, issued in real time, stay inside their 300 s and the skew.
   */
  const setUp = async (t: Test) => {
    const clock = manualClock()
    const { gatehouse, upstream } = await gatehouseFor(t, kc, {
      clock,
      settings: (base) => ({ ...base, keycloak: { ...(base.keycloak as object), timeout_ms: 500 }, session: { idle_timeout_minutes: 600 } })
    })
    const browser = new BrowserClient()
    await keycloakLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')
    const cookie = `gatehouse_session=${browser.cookie(gatehouse.proxyUrl, 'gatehouse_session')?.value ?? ''}`
    // Several tokens, some first seen during the outage: each must verify against the stored JWKS alone.
    const tokens = await Promise.all(['alice', 'bob', 'alice', 'bob'].map(async (u) => String((await kc.passwordGrant(u, `${u}-password`)).access_token)))
    const healthy = await load(gatehouse.proxyUrl, tokens.slice(0, 2), cookie, upstream)
    t.same(healthy.failures, [], 'healthy: every request passed')
    t.equal(await loginPage(gatehouse.proxyUrl), 'keycloak', 'healthy: the login page sends the browser to Keycloak')
    return { clock, gatehouse, upstream, cookie, tokens, healthy }
  }

  t.test('SIGSTOP (black hole) under load: zero failed requests for valid credentials; the login page falls back', async (t) => {
    const { clock, gatehouse, upstream, cookie, tokens, healthy } = await setUp(t)
    kc.pause()
    let paused = true
    t.teardown(() => { if (paused) kc.resume() })
    // Each refresh waits at most keycloak.timeout_ms until the circuit opens; then none waits.
    clock.advance(301_000)
    const frozen = await load(gatehouse.proxyUrl, tokens, cookie, upstream)
    t.same(frozen.failures, [], 'every request passed')
    t.ok(frozen.modes.has('cached'), 'the session went on on its cached tokens')
    t.equal(await loginPage(gatehouse.proxyUrl), 'local form', 'the login page is the local form')
    t.equal(gatehouse.app.mode.mode, 'degraded')
    t.comment(`p99 latency (ms): healthy ${healthy.p99Ms.toFixed(1)}, SIGSTOP ${frozen.p99Ms.toFixed(1)} (measured, not asserted)`)

    kc.resume()
    paused = false
    t.ok(await closeCircuit(clock, gatehouse.app), 'Keycloak answers again and the circuit closes')
    t.equal(await loginPage(gatehouse.proxyUrl), 'keycloak', 'and the login page is Keycloak\'s again')
  })

  t.test('SIGKILL (refused) under load: zero failed requests for valid credentials; the login page falls back', async (t) => {
    const { clock, gatehouse, upstream, cookie, tokens, healthy } = await setUp(t)
    await kc.kill()
    clock.advance(301_000)
    const killed = await load(gatehouse.proxyUrl, tokens, cookie, upstream)
    t.same(killed.failures, [], 'every request passed')
    t.ok(killed.modes.has('cached'), 'the session went on on its cached tokens')
    t.equal(await loginPage(gatehouse.proxyUrl), 'local form', 'the login page is the local form')
    t.comment(`p99 latency (ms): healthy ${healthy.p99Ms.toFixed(1)}, SIGKILL ${killed.p99Ms.toFixed(1)} (measured, not asserted)`)
  })
}
