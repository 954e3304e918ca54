import type { Test } from 'tap'
import { BrowserClient } from '../fixtures/browser-client.ts'
import type { Clock } from '../../src/clock.ts'
import { GATEHOUSE_CLIENT, type RealKeycloak } from '../fixtures/keycloak-real.ts'
import { keycloakSettings, startGatehouse, writeConfig, type CapturedLog } from '../fixtures/gatehouse.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'

/** Settings pointing Gatehouse at the real realm (back channel: `server`, default Keycloak itself). */
export function realSettings (kc: RealKeycloak, upstreamUrl: string, server: string = kc.baseUrl): Record<string, unknown> {
  return keycloakSettings({ issuer: kc.issuer, baseUrl: kc.baseUrl, clientId: GATEHOUSE_CLIENT.clientId, clientSecret: GATEHOUSE_CLIENT.secret }, upstreamUrl, server)
}

/** An echo app and Gatehouse in front of it, pointed at the real realm. */
export async function gatehouseFor (t: Test, kc: RealKeycloak, options: { settings?: (base: Record<string, unknown>) => Record<string, unknown>, clock?: Clock, log?: CapturedLog, policies?: Record<string, string> } = {}) {
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const base = realSettings(kc, upstream.url)
  const config = writeConfig(t.testdir(), options.settings?.(base) ?? base, options.policies ?? {})
  const gatehouse = await startGatehouse(t, config, { ...(options.clock !== undefined ? { clock: options.clock } : {}), ...(options.log !== undefined ? { log: options.log } : {}) })
  await gatehouse.started
  return { gatehouse, upstream }
}

/**
 * Signs in through SSO with a scripted browser: Gatehouse's login route, Keycloak's real
 * login page (form `kc-form-login`, fields `username` and `password`), the callback, `rd`.
 * Resolves to the final answer (the app's, a 200).
 */
export async function keycloakLogin (browser: BrowserClient, proxyUrl: string, username: string, password: string, rd = '/hello') {
  const page = await browser.get(`${proxyUrl}/_gatehouse/login?rd=${encodeURIComponent(rd)}`)
  if (page.status !== 200 || !page.body.includes('kc-form-login')) throw new Error(`no Keycloak login page: ${page.status} at ${page.url}`)
  const done = await browser.submit(page, { username, password }, { actionPart: 'login-actions/authenticate' })
  if (done.status !== 200 || !done.url.startsWith(proxyUrl)) throw new Error(`login ended with ${done.status} at ${done.url}`)
  return done
}

/** The mode the app saw for `/hello`, or the status when the request was not let through. */
export async function modeOf (browser: BrowserClient, proxyUrl: string, upstream: { requests: Array<{ headers: Record<string, unknown> }> }): Promise<string | number> {
  const res = await browser.get(`${proxyUrl}/hello`, { follow: false })
  return res.status === 200 ? String(upstream.requests.at(-1)?.headers['x-auth-request-mode']) : res.status
}

/**
 * Polls `check` until it holds or `deadlineMs` passes; resolves to whether it held. For what a
 * separate process (Keycloak) does on its own time, such as a back-channel logout POST.
 */
export async function eventually (check: () => Promise<boolean> | boolean, deadlineMs: number, everyMs = 25): Promise<boolean> {
  const until = Date.now() + deadlineMs
  for (;;) {
    if (await check()) return true
    if (Date.now() >= until) return false
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

/** Keycloak's stored login events of a type for a user (the realm keeps events: realm.json). */
export async function events (kc: RealKeycloak, type: string, userId: string): Promise<Array<Record<string, unknown>>> {
  const res = await kc.admin('GET', `/events?type=${encodeURIComponent(type)}&user=${encodeURIComponent(userId)}&max=1000`)
  return res.body as Array<Record<string, unknown>>
}
