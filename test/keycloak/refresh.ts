import type { Test } from 'tap'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { manualClock } from '../fixtures/clock.ts'
import type { RealKeycloak } from '../fixtures/keycloak-real.ts'
import { events, gatehouseFor, keycloakLogin, modeOf } from './helpers.ts'

/**
 * Refresh-token rotation against the real thing: the realm revokes a refresh token once used
 * (`revokeRefreshToken`, max reuse 0), so a second use would be refused and show as a
 * REFRESH_TOKEN_ERROR event. Keycloak's own event store counts the refreshes.
 */
export async function refreshTests (t: Test, kc: RealKeycloak): Promise<void> {
  t.test('20 concurrent requests on a session whose access token expired make exactly one refresh', async (t) => {
    const clock = manualClock()
    const { gatehouse, upstream } = await gatehouseFor(t, kc, { clock })
    const browser = new BrowserClient()
    await keycloakLogin(browser, gatehouse.proxyUrl, 'bob', 'bob-password')
    const bob = (await kc.user('bob'))?.id as string
    const refreshesBefore = (await events(kc, 'REFRESH_TOKEN', bob)).length
    const errorsBefore = (await events(kc, 'REFRESH_TOKEN_ERROR', bob)).length

    // Keycloak's access tokens live 300 s: on Gatehouse's clock this one has just run out.
    clock.advance(301_000)
    const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => await browser.get(`${gatehouse.proxyUrl}/page/${i}`, { follow: false })))
    t.same(answers.map((a) => a.status), Array(20).fill(200), 'every request was let through')
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-mode'], 'keycloak')
    t.equal((await events(kc, 'REFRESH_TOKEN', bob)).length - refreshesBefore, 1, 'Keycloak saw exactly one refresh')
    t.match(await (await fetch(`${gatehouse.adminUrl}/metrics`)).text(), /gatehouse_token_refresh_total\{result="success"\} 1/)

    // The rotated token is the one used next; the spent one is never sent again (Keycloak
    // would answer invalid_grant "Stale token" and record an error).
    clock.advance(301_000)
    t.equal(await modeOf(browser, gatehouse.proxyUrl, upstream), 'keycloak')
    t.equal((await events(kc, 'REFRESH_TOKEN', bob)).length - refreshesBefore, 2, 'the second refresh used the rotated token')
    t.equal((await events(kc, 'REFRESH_TOKEN_ERROR', bob)).length - errorsBefore, 0, 'no refresh token was ever presented twice')
  })

  t.test('Keycloak refuses a spent refresh token (so rotation is on), and Gatehouse then asks for a new login', async (t) => {
    const clock = manualClock()
    const { gatehouse, upstream } = await gatehouseFor(t, kc, { clock })
    const browser = new BrowserClient()
    await keycloakLogin(browser, gatehouse.proxyUrl, 'bob', 'bob-password')
    const tokens = await kc.passwordGrant('bob', 'bob-password')
    const first = await kc.token({ clientId: 'gatehouse', secret: 'gatehouse-secret' }, { grant_type: 'refresh_token', refresh_token: String(tokens.refresh_token) })
    t.equal(first.status, 200)
    t.not(first.body.refresh_token, tokens.refresh_token, 'a new refresh token came back')
    const again = await kc.token({ clientId: 'gatehouse', secret: 'gatehouse-secret' }, { grant_type: 'refresh_token', refresh_token: String(tokens.refresh_token) })
    t.equal(again.status, 400)
    t.same(again.body, { error: 'invalid_grant', error_description: 'Maximum allowed refresh token reuse exceeded' })

    // An admin ends bob's Keycloak sessions without telling Gatehouse (no back-channel URL
    // reaches this Gatehouse): the next refresh is invalid_grant and the session needs a login.
    await kc.setClientAttributes('gatehouse', { 'backchannel.logout.url': '' })
    t.teardown(() => kc.setClientAttributes('gatehouse', { 'backchannel.logout.url': 'http://127.0.0.1:4180/_gatehouse/backchannel-logout' }))
    t.equal((await kc.admin('POST', `/users/${(await kc.user('bob'))?.id as string}/logout`)).status, 204)
    clock.advance(301_000)
    t.equal(await modeOf(browser, gatehouse.proxyUrl, upstream), 302)
    t.match(await (await fetch(`${gatehouse.adminUrl}/metrics`)).text(), /gatehouse_token_refresh_total\{result="invalid_grant"\} 1/)
  })
}
