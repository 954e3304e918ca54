import t from 'tap'
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest, type RawResponse } from '../fixtures/http-client.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { startForwardAuthGateway, type ForwardAuthSettings } from '../fixtures/traefik-forward-auth.ts'

// {prefix}/auth as nginx and Traefik call it. The request decided on is the one X-Original-URI/
// -Method (nginx) or X-Forwarded-Uri/-Method (Traefik) describe, but only when the peer is in
// forward_auth.trusted_proxies; from anyone else those headers are ignored and the check
// request's own line (GET /_gatehouse/auth, which needs a signed-in caller) decides.

const POLICIES = readFileSync(new URL('../../policies/app.yaml', import.meta.url), 'utf8')
const AUTH = '/_gatehouse/auth'
const HTML = 'text/html,application/xhtml+xml'

const standin = await startKeycloakStandin()
t.teardown(() => standin.close())
const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const settings = keycloakSettings(standin, upstream.url)

// The test client is 127.0.0.1: trusted by the default [loopback], not by 192.0.2.1 (TEST-NET-1).
const trusted = await startGatehouse(t, writeConfig(t.testdir() + '/trusted', { ...settings, server: { trust_proxy: ['loopback'] } }, { 'app.yaml': POLICIES }))
const untrusted = await startGatehouse(t, writeConfig(t.testdir() + '/untrusted', { ...settings, forward_auth: { trusted_proxies: ['192.0.2.1'] } }, { 'app.yaml': POLICIES }))
await Promise.all([trusted.started, untrusted.started])

const alice = await standin.mintAccessToken({}, { username: 'alice' })
const bob = await standin.mintAccessToken({}, { username: 'bob' })
const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
const check = async (base: string, headers: Record<string, string>): Promise<RawResponse> => await rawRequest(base, AUTH, { headers })
const identityOf = (headers: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(headers).filter(([name]) => name.startsWith('x-auth-request-')))

t.test('from an untrusted address X-Original-URI cannot change the decision', async (t) => {
  const publicRoute = await check(untrusted.proxyUrl, { 'X-Original-URI': '/public/page', 'X-Original-Method': 'GET' })
  t.equal(publicRoute.status, 401, 'a public route named in the header is not a public allow: the check request itself needs a caller')
  t.equal(publicRoute.headers['www-authenticate'], 'Bearer realm="gatehouse"')
  t.same(identityOf(publicRoute.headers), {})

  const deniedRoute = await check(untrusted.proxyUrl, { ...bearer(alice), 'X-Original-URI': '/actuator/env' })
  t.equal(deniedRoute.status, 200, 'nor can it name a route to make the answer stricter: the request line decides')

  const start = await rawRequest(untrusted.proxyUrl, '/_gatehouse/start', { headers: { 'X-Original-URI': '/reports?a=1' } })
  t.equal(start.headers.location, '/_gatehouse/login?rd=%2F', 'nor does it pick where /start returns to')
})

t.test("from an untrusted address Traefik's X-Forwarded-Uri cannot change the decision either", async (t) => {
  const publicRoute = await check(untrusted.proxyUrl, { 'X-Forwarded-Uri': '/public/page', 'X-Forwarded-Method': 'GET', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'app.example' })
  t.equal(publicRoute.status, 401)
  const browser = await check(untrusted.proxyUrl, { 'X-Forwarded-Uri': '/dashboard', accept: HTML })
  t.equal(browser.status, 401, "not Traefik's browser redirect either: the peer is not Traefik")
  const deniedRoute = await check(untrusted.proxyUrl, { ...bearer(bob), 'X-Forwarded-Uri': '/admin/users' })
  t.equal(deniedRoute.status, 200)
})

t.test('from a trusted address the same headers describe the request decided on', async (t) => {
  for (const [name, headers] of [
    ['nginx', { 'X-Original-URI': '/public/page', 'X-Original-Method': 'GET' }],
    ['Traefik', { 'X-Forwarded-Uri': '/public/page', 'X-Forwarded-Method': 'GET', 'X-Forwarded-Proto': 'http', 'X-Forwarded-Host': 'app.example' }]
  ] as const) {
    const res = await check(trusted.proxyUrl, headers)
    t.equal(res.status, 200, `${name}: the public route is allowed without credentials`)
    t.same(identityOf(res.headers), {}, `${name}: and carries no identity`)
    t.equal(res.headers['cache-control'], 'no-store')
  }
  const denied = await check(trusted.proxyUrl, { ...bearer(alice), 'X-Original-URI': '/actuator/env' })
  t.equal(denied.status, 403, 'a route the policy denies')
})

t.test('the described method counts: a GET-only public rule does not cover a POST', async (t) => {
  t.equal((await check(trusted.proxyUrl, { 'X-Original-URI': '/healthz', 'X-Original-Method': 'GET' })).status, 200)
  t.equal((await check(trusted.proxyUrl, { 'X-Original-URI': '/healthz', 'X-Original-Method': 'POST' })).status, 401)
  t.equal((await check(trusted.proxyUrl, { 'X-Forwarded-Uri': '/healthz', 'X-Forwarded-Method': 'POST' })).status, 401)
  t.equal((await check(trusted.proxyUrl, { 'X-Original-URI': '/healthz' })).status, 200, 'no method header: GET, as nginx subrequests are')
})

t.test('roles decide on the described path, in every spelling of it', async (t) => {
  const allowed = await check(trusted.proxyUrl, { ...bearer(alice), 'X-Original-URI': '/admin/users' })
  t.equal(allowed.status, 200)
  t.equal(allowed.headers['x-auth-request-user'], standin.user('alice').sub)
  t.equal(allowed.headers['x-auth-request-preferred-username'], 'alice')
  t.equal(allowed.headers['x-auth-request-mode'], 'token')
  for (const path of ['/admin/users', '//admin/users', '/ADMIN/users', '/%61dmin/users', '/public/..%2fadmin/users', '/admin;x=1/users']) {
    const res = await check(trusted.proxyUrl, { ...bearer(bob), 'X-Original-URI': path })
    t.equal(res.status, 403, `${path}: 403 (auth_request passes on only 401 and 403)`)
  }
})

t.test('a browser page load without a session: nginx gets the 401 and sends it to /start; Traefik gets the 302 itself', async (t) => {
  const nginx = await check(trusted.proxyUrl, { 'X-Original-URI': '/reports?a=1&b=2', accept: HTML })
  t.equal(nginx.status, 401)
  const traefik = await check(trusted.proxyUrl, { 'X-Forwarded-Uri': '/reports?a=1&b=2', 'X-Forwarded-Method': 'GET', accept: HTML })
  t.equal(traefik.status, 302)
  t.equal(traefik.headers.location, '/_gatehouse/login?rd=%2Freports%3Fa%3D1%26b%3D2')
  const api = await check(trusted.proxyUrl, { 'X-Forwarded-Uri': '/reports', accept: 'application/json' })
  t.equal(api.status, 401, 'an API call is not redirected')
})

t.test('/start sends the browser to the login page with the return path from rd, or from a trusted X-Original-URI', async (t) => {
  const withRd = await rawRequest(trusted.proxyUrl, '/_gatehouse/start?rd=%2Freports%3Fa%3D1')
  t.equal(withRd.status, 302)
  t.equal(withRd.headers.location, '/_gatehouse/login?rd=%2Freports%3Fa%3D1')
  const fromHeader = await rawRequest(trusted.proxyUrl, '/_gatehouse/start', { headers: { 'X-Original-URI': '/reports?a=1&b=2' } })
  t.equal(fromHeader.headers.location, '/_gatehouse/login?rd=%2Freports%3Fa%3D1%26b%3D2', 'the whole query, which ?rd=$request_uri would have cut at &b=2')
  const rdWins = await rawRequest(trusted.proxyUrl, '/_gatehouse/start?rd=%2Fmine', { headers: { 'X-Original-URI': '/theirs' } })
  t.equal(rdWins.headers.location, '/_gatehouse/login?rd=%2Fmine')
  for (const evil of ['//evil.example/x', 'https://evil.example/', '/\\evil.example']) {
    const res = await rawRequest(trusted.proxyUrl, '/_gatehouse/start', { headers: { 'X-Original-URI': evil } })
    t.equal(res.headers.location, '/_gatehouse/login?rd=%2F', `${evil}: never another site`)
  }
})

t.test("Traefik flows: deploy/traefik/dynamic.yaml's ForwardAuth settings in front of Gatehouse and the app", async (t) => {
  const dynamic = parse(readFileSync(new URL('../../deploy/traefik/dynamic.yaml', import.meta.url), 'utf8')) as { http: { middlewares: Record<string, { forwardAuth: ForwardAuthSettings }> } }
  const shipped = Object.values(dynamic.http.middlewares)[0]?.forwardAuth
  if (shipped === undefined) {
    t.fail('no ForwardAuth middleware in dynamic.yaml')
    return
  }
  // Only the address changes: Gatehouse's host and port in this test, the same path.
  const address = new URL(shipped.address)
  const gateway = await startForwardAuthGateway(t, {
    settings: { ...shipped, address: `${trusted.proxyUrl}${address.pathname}` },
    prefix: '/_gatehouse',
    gatehouse: trusted.proxyUrl,
    app: upstream.url
  })
  const appCalls = async (fn: () => Promise<unknown>): Promise<number> => {
    const before = upstream.requests.length
    await fn()
    return upstream.requests.length - before
  }

  t.test('an allowed request reaches the app with the identity and none of the forged headers', async (t) => {
    const res = await rawRequest(gateway.url, '/dashboard?tab=1', {
      headers: {
        ...bearer(alice),
        'X-Auth-Request-User': 'mallory',
        X_Auth_Request_User: 'mallory',
        'X-Auth-Request-Anything': 'forged',
        'X-Auth-Request-Access-Token': 'forged',
        'X-Forwarded-Uri': '/public/forged'
      }
    })
    t.equal(res.status, 200)
    t.equal(gateway.authRequests.at(-1)?.['x-forwarded-uri'], '/dashboard?tab=1', 'Traefik described the request it received')
    const seen = upstream.requests.at(-1)
    t.same(identityOf(seen?.headers ?? {}), {
      'x-auth-request-user': standin.user('alice').sub,
      'x-auth-request-preferred-username': 'alice',
      'x-auth-request-email': 'alice@example.test',
      'x-auth-request-groups': '/staff/admins',
      'x-auth-request-roles': String(seen?.headers['x-auth-request-roles']),
      'x-auth-request-mode': 'token'
    })
    t.notOk(seen?.rawHeaderNames.some((name) => name.toLowerCase().startsWith('x_auth')), 'no underscore spelling reaches the app')
  })

  t.test('denials never reach the app', async (t) => {
    let res: RawResponse | undefined
    t.equal(await appCalls(async () => { res = await rawRequest(gateway.url, '/dashboard', { headers: { accept: 'application/json' } }) }), 0)
    t.equal(res?.status, 401)
    t.equal(res?.headers['www-authenticate'], 'Bearer realm="gatehouse"')
    t.equal(await appCalls(async () => { res = await rawRequest(gateway.url, '/admin/users', { headers: bearer(bob) }) }), 0)
    t.equal(res?.status, 403)
  })

  t.test('a browser is sent to the login page and, signed in, back to the page it asked for', async (t) => {
    const browser = new BrowserClient()
    const target = '/reports?a=1&b=2'
    let first: Awaited<ReturnType<BrowserClient['get']>> | undefined
    t.equal(await appCalls(async () => { first = await browser.get(`${gateway.url}${target}`, { follow: false }) }), 0)
    t.equal(first?.status, 302)
    t.equal(first?.headers.location, `/_gatehouse/login?rd=${encodeURIComponent(target)}`)
    const loginPage = await browser.get(new URL(first?.headers.location as string, gateway.url).href)
    t.ok(loginPage.url.startsWith(standin.issuer), 'on the login page')
    const done = await browser.submit(loginPage, { username: 'alice', password: 'alice-password' })
    t.equal(done.status, 200, done.chain.join(' -> '))
    t.equal(done.url, `${gateway.url}${target}`)
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-mode'], 'keycloak')
  })
})

t.test('the check itself is never proxied to the app', async (t) => {
  t.notOk(upstream.requests.some((r) => r.url.startsWith('/_gatehouse')), 'no request under the prefix reached the app')
})
