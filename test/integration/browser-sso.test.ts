import t from 'tap'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { launchChromium } from '../fixtures/browser.ts'
import { requireProgram } from '../fixtures/system-programs.ts'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { createDemoUpstream } from '../../demo/upstream.ts'

t.test('headless Chromium: SSO login through the stand-in ends on the demo app, which shows the identity', async (t) => {
  if (requireProgram(t, 'chromium') === null) return
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = createDemoUpstream()
  upstream.listen(0, '127.0.0.1')
  await once(upstream, 'listening')
  t.teardown(() => { upstream.closeAllConnections(); upstream.close() })
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(standin, upstreamUrl)))
  await gatehouse.started

  const browser = await launchChromium(t)
  const page = await browser.newPage()
  await page.goto(`${gatehouse.proxyUrl}/dashboard`)
  t.equal(new URL(page.url()).origin, new URL(standin.issuer).origin, 'the browser landed on the identity provider')
  await page.fill('#username', 'alice')
  await page.fill('#password', 'alice-password')
  await Promise.all([page.waitForURL(`${gatehouse.proxyUrl}/dashboard`), page.click('#kc-login')])
  t.equal(await page.textContent('h1'), 'Demo app')
  const body = await page.textContent('body') ?? ''
  t.match(body, 'x-auth-request-preferred-username')
  t.match(body, 'alice')
  t.match(body, /x-auth-request-mode\s*keycloak/)

  const cookies = await page.context().cookies(gatehouse.proxyUrl)
  const session = cookies.find((c) => c.name === 'gatehouse_session')
  t.ok(session?.httpOnly, 'the session cookie is HttpOnly')
  t.equal(session?.sameSite, 'Lax')

  // Sign out through the confirmation page; the provider then sends the browser back.
  await page.goto(`${gatehouse.proxyUrl}/_gatehouse/logout?rd=%2Fdashboard`)
  await Promise.all([page.waitForURL((url) => url.href.startsWith(standin.issuer) || url.href.startsWith(gatehouse.proxyUrl + '/dashboard')), page.click('button[type=submit]')])
  const after = await page.context().cookies(gatehouse.proxyUrl)
  t.notOk(after.find((c) => c.name === 'gatehouse_session'), 'the session cookie is gone')
})
