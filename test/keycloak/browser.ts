import type { Test } from 'tap'
import { launchChromium } from '../fixtures/browser.ts'
import type { RealKeycloak } from '../fixtures/keycloak-real.ts'
import { gatehouseFor } from './helpers.ts'

/** Headless Chromium through Keycloak's real login page: the code flow with PKCE end to end. */
export async function browserTests (t: Test, kc: RealKeycloak): Promise<void> {
  t.test("Chromium signs in on Keycloak's login page and the app sees alice's identity, roles and groups", async (t) => {
    const { gatehouse, upstream } = await gatehouseFor(t, kc)
    const browser = await launchChromium(t)
    const page = await browser.newPage()
    const authRequests: URL[] = []
    page.on('request', (request) => {
      const url = new URL(request.url())
      if (url.pathname.endsWith('/protocol/openid-connect/auth')) authRequests.push(url)
    })

    await page.goto(`${gatehouse.proxyUrl}/dashboard?tab=2`)
    t.equal(new URL(page.url()).origin, kc.baseUrl, "the browser is on Keycloak's page")
    t.equal(await page.title(), 'Sign in to Gatehouse test realm')
    await page.fill('#username', 'alice')
    await page.fill('#password', 'alice-password')
    await Promise.all([page.waitForURL(`${gatehouse.proxyUrl}/dashboard?tab=2`), page.click('#kc-login')])

    const auth = authRequests[0]
    t.equal(auth?.searchParams.get('code_challenge_method'), 'S256', 'PKCE S256 (the client requires it)')
    t.equal(auth?.searchParams.get('redirect_uri'), `${gatehouse.proxyUrl}/_gatehouse/callback`)
    // Chromium asks for /favicon.ico too: look at the page's own request.
    const seen = upstream.requests.findLast((r) => r.url === '/dashboard?tab=2')?.headers ?? {}
    t.equal(seen['x-auth-request-user'], (await kc.user('alice'))?.id)
    t.equal(seen['x-auth-request-preferred-username'], 'alice')
    t.equal(seen['x-auth-request-email'], 'alice@example.test')
    t.equal(seen['x-auth-request-groups'], '/staff/admins')
    t.equal(seen['x-auth-request-mode'], 'keycloak')
    const roles = String(seen['x-auth-request-roles']).split(',')
    for (const role of ['admin', 'editor', 'user', 'gatehouse:operator']) t.ok(roles.includes(role), `role ${role}`)

    const cookie = (await page.context().cookies(gatehouse.proxyUrl)).find((c) => c.name === 'gatehouse_session')
    t.ok(cookie?.httpOnly, 'the session cookie is HttpOnly')
    const info = await page.evaluate(async () => await (await fetch('/_gatehouse/userinfo')).json() as Record<string, unknown>)
    t.match(info, { preferred_username: 'alice', auth_mode: 'keycloak', email: 'alice@example.test' })
  })

  t.test('a wrong password stays on Keycloak\'s page with its error, and Gatehouse opens no session', async (t) => {
    const { gatehouse } = await gatehouseFor(t, kc)
    const browser = await launchChromium(t)
    const page = await browser.newPage()
    await page.goto(`${gatehouse.proxyUrl}/dashboard`)
    await page.fill('#username', 'alice')
    await page.fill('#password', 'not-her-password')
    await Promise.all([page.waitForLoadState('load'), page.click('#kc-login')])
    t.equal(new URL(page.url()).origin, kc.baseUrl)
    t.match(await page.textContent('body') ?? '', 'Invalid username or password.')
    t.equal(Object.values((await gatehouse.app.status()).sessions.active).reduce((a, b) => a + b, 0), 0, 'no session')
  })
}
