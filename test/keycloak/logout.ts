import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { freePort } from '../fixtures/sessions.ts'
import type { RealKeycloak } from '../fixtures/keycloak-real.ts'
import { eventually, gatehouseFor, keycloakLogin, modeOf } from './helpers.ts'

const DEFAULT_BACKCHANNEL_URL = 'http://127.0.0.1:4180/_gatehouse/backchannel-logout'

/** RP-initiated and back-channel logout with Keycloak's own end-session endpoint and logout tokens. */
export async function logoutTests (t: Test, kc: RealKeycloak): Promise<void> {
  t.teardown(() => kc.setClientAttributes('gatehouse', { 'backchannel.logout.url': DEFAULT_BACKCHANNEL_URL }))

  t.test('the logout token Keycloak posts: form-encoded, header typ logout+jwt, sid, sub, events, no nonce', async (t) => {
    const posts: Array<{ contentType: string | undefined, body: string }> = []
    const receiver = createServer((req, res) => {
      let body = ''
      req.on('data', (c: Buffer) => { body += c.toString() })
      req.on('end', () => { posts.push({ contentType: req.headers['content-type'], body }); res.end() })
    })
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
    t.teardown(() => receiver.close())
    await kc.setClientAttributes('gatehouse', { 'backchannel.logout.url': `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/bc` })

    const tokens = await kc.passwordGrant('bob', 'bob-password')
    const bob = (await kc.user('bob'))?.id as string
    t.equal((await kc.admin('POST', `/users/${bob}/logout`)).status, 204)
    t.ok(await eventually(() => posts.length > 0, 1000), 'Keycloak posted a logout token')
    t.equal(posts[0]?.contentType, 'application/x-www-form-urlencoded')
    const form = new URLSearchParams(posts[0]?.body)
    t.same([...form.keys()], ['logout_token'], 'one form field, logout_token')
    const token = form.get('logout_token') as string
    t.match(decodeProtectedHeader(token), { alg: 'RS256', typ: 'logout+jwt' })
    const claims = decodeJwt(token)
    t.match(claims, {
      iss: kc.issuer,
      aud: 'gatehouse',
      sub: bob,
      sid: decodeJwt(String(tokens.access_token)).sid,
      typ: 'Logout',
      events: { 'http://schemas.openid.net/event/backchannel-logout': {} }
    })
    t.type(claims.jti, 'string')
    t.type(claims.iat, 'number')
    t.notOk('nonce' in claims)
    t.equal(typeof claims.exp === 'number' && typeof claims.iat === 'number' ? claims.exp - claims.iat : null, 120, 'exp is iat + 120 s')
  })

  t.test('back-channel logout: ending alice\'s sessions through the Admin API ends her Gatehouse session within 1 s', async (t) => {
    const port = await freePort()
    const { gatehouse, upstream } = await gatehouseFor(t, kc, { settings: (base) => ({ ...base, server: { port } }) })
    await kc.setClientAttributes('gatehouse', { 'backchannel.logout.url': `http://127.0.0.1:${port}/_gatehouse/backchannel-logout` })
    const alice = new BrowserClient()
    const bob = new BrowserClient()
    await keycloakLogin(alice, gatehouse.proxyUrl, 'alice', 'alice-password')
    await keycloakLogin(bob, gatehouse.proxyUrl, 'bob', 'bob-password')
    t.equal(await modeOf(alice, gatehouse.proxyUrl, upstream), 'keycloak')

    const aliceId = (await kc.user('alice'))?.id as string
    t.equal((await kc.admin('POST', `/users/${aliceId}/logout`)).status, 204)
    t.ok(await eventually(async () => await modeOf(alice, gatehouse.proxyUrl, upstream) === 302, 1000), "alice's Gatehouse session ended within 1 s")
    t.equal(await modeOf(bob, gatehouse.proxyUrl, upstream), 'keycloak', 'bob is untouched')
    // Keycloak posts one logout token per user session of alice's that gatehouse took part in
    // (earlier tests left some from password grants); exactly one of them named this session.
    const deliveries = gatehouse.log.entries().filter((e) => e.msg === 'back-channel logout')
    t.equal(deliveries.filter((e) => e.sessions === 1).length, 1, 'one logout token ended the Gatehouse session')
    t.ok(deliveries.every((e) => e.sub === aliceId), 'every logout token named alice')
  })

  t.test('RP-initiated logout: Gatehouse ends its session, Keycloak ends its own and returns the browser', async (t) => {
    const { gatehouse, upstream } = await gatehouseFor(t, kc)
    const browser = new BrowserClient()
    await keycloakLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')
    const alice = (await kc.user('alice'))?.id as string
    const before = (await kc.admin('GET', `/users/${alice}/sessions`)).body as unknown[]
    t.ok(before.length >= 1, 'alice has a Keycloak session')

    const confirm = await browser.get(`${gatehouse.proxyUrl}/_gatehouse/logout?rd=%2Fbye`)
    t.equal(confirm.status, 200)
    const out = await browser.submit(confirm, {}, { follow: false })
    t.equal(out.status, 303)
    const endSession = new URL(out.headers.location as string)
    t.equal(endSession.origin + endSession.pathname, `${kc.issuer}/protocol/openid-connect/logout`)
    t.ok(endSession.searchParams.get('id_token_hint'), 'with the ID token as hint, Keycloak asks no confirmation')
    const state = endSession.searchParams.get('state')
    t.match(state, /^[A-Za-z0-9_-]{20,}$/, 'a state is sent (RP-Initiated Logout 1.0 §2)')

    const back = await browser.get(endSession.href, { follow: false })
    t.equal(back.status, 302, 'Keycloak logs out and redirects')
    t.equal(back.headers.location, `${gatehouse.proxyUrl}/bye?state=${state as string}`, 'back to the return path, with the state')
    t.same((await kc.admin('GET', `/users/${alice}/sessions`)).body, [], 'her Keycloak sessions are gone')
    t.equal(await modeOf(browser, gatehouse.proxyUrl, upstream), 302, 'and so is the Gatehouse session')

    // Keycloak's SSO cookie went with it: the next login shows the login page again.
    const page = await browser.get(`${gatehouse.proxyUrl}/_gatehouse/login?rd=%2Fhello`)
    t.match(page.body, 'kc-form-login', 'Keycloak asks for the password again')
  })
}
