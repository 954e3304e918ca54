import t from 'tap'
import { readFileSync } from 'node:fs'
import { requireProgram } from '../fixtures/system-programs.ts'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { readGatehouseConf, startNginx, templateGatehouseConf } from '../fixtures/nginx.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'

// Real nginx (Debian's package) in front of Gatehouse and the echo app, running the
// repository's deploy/nginx/gatehouse.conf with only its three addresses changed. The policies
// are the shipped ones (policies/app.yaml), plus an admin role with one permission: /public/**
// public, /admin/** needs the admin role, /actuator/** denied, everything else needs a
// signed-in caller.

const POLICIES = readFileSync(new URL('../../policies/app.yaml', import.meta.url), 'utf8')

// Every identity header Gatehouse sets, as a client might forge them.
const FORGED = {
  'X-Auth-Request-User': 'mallory',
  'X-Auth-Request-Preferred-Username': 'mallory',
  'X-Auth-Request-Email': 'mallory@evil.example',
  'X-Auth-Request-Groups': '/root',
  'X-Auth-Request-Roles': 'admin',
  'X-Auth-Request-Permissions': 'everything',
  'X-Auth-Request-Mode': 'local',
  'X-Auth-Request-Access-Token': 'forged',
  X_Auth_Request_User: 'mallory',
  'X-Original-URI': '/public/forged'
}

t.test('nginx auth_request with deploy/nginx/gatehouse.conf', async (t) => {
  const nginxPath = requireProgram(t, 'nginx')
  if (nginxPath === null) return

  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  // server.trust_proxy: nginx is on loopback, so its X-Forwarded-For/-Proto are believed on
  // the login pages; forward_auth.trusted_proxies keeps its default, [loopback].
  // Beside them one role with a permission, so X-Auth-Request-Permissions has a value to copy.
  const config = writeConfig(t.testdir(), { ...keycloakSettings(standin, upstream.url), server: { trust_proxy: ['loopback'] } }, { 'app.yaml': POLICIES, 'roles.yaml': 'roles:\n  admin: { permissions: [reports:read] }\n' })
  const gatehouse = await startGatehouse(t, config)
  await gatehouse.started
  const shipped = readGatehouseConf()
  const nginx = await startNginx(t, nginxPath, t.testdir(), (listen) => templateGatehouseConf(shipped, {
    listen,
    gatehouse: new URL(gatehouse.proxyUrl).host,
    app: new URL(upstream.url).host
  }))

  const alice = await standin.mintAccessToken({}, { username: 'alice' })
  const bob = await standin.mintAccessToken({}, { username: 'bob' })
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
  const identityOf = (headers: Record<string, unknown>): Record<string, unknown> =>
    Object.fromEntries(Object.entries(headers).filter(([name]) => name.startsWith('x-auth-request') || name.startsWith('x_auth') || name.startsWith('x-original')))
  /** Runs `fn` and reports how many requests reached the app meanwhile. */
  const appCalls = async (fn: () => Promise<unknown>): Promise<number> => {
    const before = upstream.requests.length
    await fn()
    return upstream.requests.length - before
  }

  t.test('an allowed request reaches the app with Gatehouse\'s identity headers and none of the client\'s', async (t) => {
    const res = await rawRequest(nginx.url, '/dashboard?tab=1&x=%2F', { headers: { ...bearer(alice), ...FORGED } })
    t.equal(res.status, 200)
    const seen = upstream.requests.at(-1)
    if (seen === undefined) {
      t.fail('the app got nothing')
      return
    }
    t.equal(seen.url, '/dashboard?tab=1&x=%2F', 'path and query as the client sent them')
    const user = standin.user('alice')
    t.same(identityOf(seen.headers), {
      'x-auth-request-user': user.sub,
      'x-auth-request-preferred-username': 'alice',
      'x-auth-request-email': 'alice@example.test',
      'x-auth-request-groups': '/staff/admins',
      'x-auth-request-roles': String(seen.headers['x-auth-request-roles']),
      'x-auth-request-permissions': 'reports:read',
      'x-auth-request-mode': 'token'
    }, 'exactly the identity Gatehouse answered: no forged value, no access token, no X-Original-URI')
    t.ok(String(seen.headers['x-auth-request-roles']).split(',').includes('admin'))
    t.equal(seen.headers.authorization, `Bearer ${alice}`, "the client's Authorization passes through, as in proxy mode")
    t.equal(seen.headers['x-forwarded-proto'], 'http')
  })

  t.test('a request body reaches the app whole; the check never carried it', async (t) => {
    const body = JSON.stringify({ hello: 'world' })
    const res = await rawRequest(nginx.url, '/api/items', { method: 'POST', headers: { ...bearer(alice), 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }, body })
    t.equal(res.status, 200)
    const seen = upstream.requests.at(-1)
    t.equal(seen?.method, 'POST')
    t.equal(seen?.body, body)
  })

  t.test('a public route reaches the app without credentials and without any identity header', async (t) => {
    const res = await rawRequest(nginx.url, '/public/logo.svg', { headers: FORGED })
    t.equal(res.status, 200)
    t.same(identityOf(upstream.requests.at(-1)?.headers ?? {}), {})
  })

  t.test('no credentials: 401 with WWW-Authenticate, and the app receives nothing', async (t) => {
    let res: Awaited<ReturnType<typeof rawRequest>> | undefined
    t.equal(await appCalls(async () => { res = await rawRequest(nginx.url, '/dashboard', { headers: { accept: 'application/json', ...FORGED } }) }), 0)
    t.equal(res?.status, 401)
    t.equal(res?.headers['www-authenticate'], 'Bearer realm="gatehouse"')
    t.equal(res?.headers['content-type'], 'application/json')
    t.same(JSON.parse(res?.body ?? ''), { error: 'unauthorized' })
  })

  t.test('a refused token: 401 with the reason in WWW-Authenticate, and the app receives nothing', async (t) => {
    const now = Math.floor(Date.now() / 1000)
    const expired = await standin.mintAccessToken({ exp: now - 120, iat: now - 420 })
    let res: Awaited<ReturnType<typeof rawRequest>> | undefined
    t.equal(await appCalls(async () => { res = await rawRequest(nginx.url, '/dashboard', { headers: bearer(expired) }) }), 0)
    t.equal(res?.status, 401)
    t.match(res?.headers['www-authenticate'], /^Bearer realm="gatehouse", error="invalid_token"/)
  })

  t.test('a token without the admin role: 403 on /admin, in every spelling, and the app receives nothing', async (t) => {
    for (const path of ['/admin/users', '//admin/users', '/ADMIN/users', '/%61dmin/users', '/public/..%2fadmin/users']) {
      let res: Awaited<ReturnType<typeof rawRequest>> | undefined
      t.equal(await appCalls(async () => { res = await rawRequest(nginx.url, path, { headers: bearer(bob) }) }), 0, `${path}: nothing reached the app`)
      t.equal(res?.status, 403, path)
    }
    const allowed = await rawRequest(nginx.url, '/admin/users', { headers: bearer(alice) })
    t.equal(allowed.status, 200, 'the admin role passes')
  })

  t.test('a route the policy denies: 403 even with a valid token, and the app receives nothing', async (t) => {
    let res: Awaited<ReturnType<typeof rawRequest>> | undefined
    t.equal(await appCalls(async () => { res = await rawRequest(nginx.url, '/actuator/env', { headers: bearer(alice) }) }), 0)
    t.equal(res?.status, 403)
  })

  t.test('a client cannot call the check itself through nginx', async (t) => {
    const res = await rawRequest(nginx.url, '/_gatehouse/auth', { headers: { 'X-Original-URI': '/public/x' } })
    t.equal(res.status, 404, 'the auth location is internal')
  })

  t.test('a browser without a session is sent to the login page and, signed in, back to the page it asked for', async (t) => {
    const browser = new BrowserClient()
    const target = '/reports/2024?tab=summary&sort=desc'
    let first: Awaited<ReturnType<BrowserClient['get']>> | undefined
    t.equal(await appCalls(async () => { first = await browser.get(`${nginx.url}${target}`, { follow: false }) }), 0, 'nothing reached the app before signing in')
    t.equal(first?.status, 302, 'nginx answers the page load with a redirect')
    t.equal(first?.headers.location, `/_gatehouse/login?rd=${encodeURIComponent(target)}`, 'the whole query survives the trip through nginx')

    const loginPage = await browser.get(new URL(first?.headers.location as string, nginx.url).href)
    t.equal(loginPage.status, 200)
    t.ok(loginPage.url.startsWith(standin.issuer), `on the identity provider's login page: ${loginPage.chain.join(' -> ')}`)
    const auth = new URL(loginPage.chain.find((u) => u.includes('/protocol/openid-connect/auth')) as string)
    t.equal(auth.searchParams.get('redirect_uri'), `${nginx.url}/_gatehouse/callback`, 'the callback goes through nginx')

    const done = await browser.submit(loginPage, { username: 'alice', password: 'alice-password' })
    t.equal(done.status, 200, `ended on the app: ${done.chain.join(' -> ')}`)
    t.equal(done.url, `${nginx.url}${target}`, 'back where the browser started')
    const seen = upstream.requests.at(-1)
    t.equal(seen?.url, target)
    t.equal(seen?.headers['x-auth-request-preferred-username'], 'alice')
    t.equal(seen?.headers['x-auth-request-mode'], 'keycloak')
    t.ok(browser.cookie(nginx.url, 'gatehouse_session'), 'the session cookie was set through nginx')

    // The session alone now lets the browser in, and still not into what it may not see.
    const again = await browser.get(`${nginx.url}/other`)
    t.equal(again.status, 200)
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], standin.user('alice').sub)
  })

  t.test('a browser page load with a session but without the role gets 403, not the login page', async (t) => {
    const browser = new BrowserClient()
    const loginPage = await browser.get(`${nginx.url}/_gatehouse/login?rd=%2Fadmin%2Fusers`)
    const done = await browser.submit(loginPage, { username: 'bob', password: 'bob-password' })
    t.equal(done.status, 403, `bob is refused: ${done.chain.join(' -> ')}`)
    t.equal(done.url, `${nginx.url}/admin/users`)
  })

  t.test('nginx logged no error while serving these requests', async (t) => {
    t.notMatch(nginx.log(), /\[(error|crit|alert|emerg)\]/)
  })
})
