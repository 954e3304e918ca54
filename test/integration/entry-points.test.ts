// One table, every entry point (issue 10): the same request asked through the proxy, Envoy's
// HTTP ext_authz, Envoy's gRPC ext_authz and forward-auth gets the same decision, status and
// identity headers, because every entry point only translates to and from decide().
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startCluster } from '../fixtures/cluster.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { formLogin } from '../fixtures/sessions.ts'
import { ENTRY_POINTS, type Asked, type EntryPointClient } from '../fixtures/entry-points.ts'
import { RBAC_POLICY, RBAC_USERS } from '../fixtures/rbac.ts'

const POLICIES = { 'app.yaml': readFileSync(join(import.meta.dirname, '../../policies/app.yaml'), 'utf8') }
const IDENTITY = /^x-auth-request-/

interface Case {
  name: string
  method?: string
  path: string
  headers: Record<string, string>
  /** Expected decision; `status` may differ per entry point where a gateway's protocol says so. */
  expect: { allow: boolean, status: number | Partial<Record<string, number>>, location?: string, identity?: Record<string, string> }
}

t.test('every case gives the same decision, status and identity headers through every entry point', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'keycloak' }, grpc: { enabled: true, host: '127.0.0.1', port: 0 } }, POLICIES))
  await gatehouse.started
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const { standin } = cluster
  const alice = (await standin.passwordGrant('alice', 'alice-password')).access_token
  const bob = (await standin.passwordGrant('bob', 'bob-password')).access_token
  const now = Math.floor(Date.now() / 1000)
  const expired = await standin.mintAccessToken({ exp: now - 120, iat: now - 420 })
  const browser = new BrowserClient()
  t.equal((await formLogin(browser, gatehouse.proxyUrl, 'bob', 'bob-password')).status, 200)
  const sessionCookie = `gatehouse_session=${browser.cookie(gatehouse.proxyUrl, 'gatehouse_session')?.value as string}`
  const aliceSub = standin.user('alice').sub
  const bobSub = standin.user('bob').sub
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
  // A bad path is a 400 everywhere but forward-auth, which answers only 200, 401 and 403
  // (nginx turns anything else into a 500).
  const badPath = { proxy: 400, ext_authz_http: 400, ext_authz_grpc: 400, forward_auth: 403 }

  const cases: Case[] = [
    { name: 'no credentials', path: '/hello', headers: {}, expect: { allow: false, status: 401 } },
    { name: 'a valid token', path: '/hello?q=1', headers: bearer(alice), expect: { allow: true, status: 200, identity: { 'x-auth-request-user': aliceSub, 'x-auth-request-preferred-username': 'alice', 'x-auth-request-mode': 'token' } } },
    { name: 'an expired token', path: '/hello', headers: bearer(expired), expect: { allow: false, status: 401 } },
    { name: 'a token without the required role', path: '/admin/users', headers: bearer(bob), expect: { allow: false, status: 403 } },
    { name: 'the role the rule needs', path: '/admin/users', headers: bearer(alice), expect: { allow: true, status: 200, identity: { 'x-auth-request-user': aliceSub } } },
    { name: 'a valid session cookie', path: '/hello', headers: { cookie: sessionCookie }, expect: { allow: true, status: 200, identity: { 'x-auth-request-user': bobSub, 'x-auth-request-mode': 'keycloak' } } },
    { name: 'a spoofed identity header', path: '/hello', headers: { ...bearer(bob), 'x-auth-request-user': 'root', 'x-auth-request-access-token': 'forged', 'x_auth_request_email': 'root@evil' }, expect: { allow: true, status: 200, identity: { 'x-auth-request-user': bobSub } } },
    { name: 'a spoofed header on a public route', path: '/public/index.html', headers: { 'x-auth-request-user': 'root' }, expect: { allow: true, status: 200, identity: {} } },
    { name: 'a public route', path: '/public/style.css', headers: {}, expect: { allow: true, status: 200, identity: {} } },
    { name: 'a browser navigation', path: '/reports?y=2', headers: { accept: 'text/html,application/xhtml+xml' }, expect: { allow: false, status: 302, location: '/_gatehouse/login?rd=%2Freports%3Fy%3D2' } },
    { name: 'a deny rule', path: '/actuator/env', headers: bearer(alice), expect: { allow: false, status: 403 } },
    { name: 'bypass: //admin', path: '//admin/x', headers: bearer(bob), expect: { allow: false, status: 403 } },
    { name: 'bypass: /admin;x=1', path: '/admin;x=1', headers: bearer(bob), expect: { allow: false, status: badPath } },
    { name: 'bypass: /ADMIN', path: '/ADMIN/x', headers: bearer(bob), expect: { allow: false, status: 403 } },
    { name: 'bypass: /%61dmin', path: '/%61dmin/x', headers: bearer(bob), expect: { allow: false, status: 403 } },
    { name: 'bypass: /public/..%2fadmin', path: '/public/..%2fadmin', headers: bearer(bob), expect: { allow: false, status: badPath } },
    { name: 'bypass: /public/../admin', path: '/public/../admin/x', headers: bearer(bob), expect: { allow: false, status: 403 } }
  ]

  const clients: EntryPointClient[] = ENTRY_POINTS.map((make) => make(gatehouse, cluster.upstream, (fn) => t.teardown(fn)))
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      for (const client of clients) {
        const before = cluster.upstream.requests.length
        const got: Asked = await client.ask({ method: c.method ?? 'GET', path: c.path, headers: c.headers })
        const status = typeof c.expect.status === 'number' ? c.expect.status : c.expect.status[client.name] as number
        t.equal(got.allow, c.expect.allow, `${client.name}: ${c.expect.allow ? 'allowed' : 'denied'}`)
        t.equal(got.status, status, `${client.name}: status`)
        if (c.expect.location !== undefined) t.equal(got.location, c.expect.location, `${client.name}: Location`)
        if (got.status === 401) t.match(got.wwwAuthenticate, /^Bearer realm="gatehouse"/, `${client.name}: WWW-Authenticate`)
        if (c.expect.identity !== undefined) {
          const identity = Object.fromEntries(Object.entries(got.identity).filter(([name]) => IDENTITY.test(name)))
          t.match(identity, c.expect.identity, `${client.name}: identity headers`)
          for (const name of Object.keys(identity)) t.notOk(['root', 'forged', 'root@evil'].includes(identity[name] as string), `${client.name}: ${name} is not the client's`)
          t.notOk('x_auth_request_email' in got.identity, `${client.name}: no underscore spelling reaches the app`)
          if (Object.keys(c.expect.identity).length === 0) t.same(identity, {}, `${client.name}: no identity on a public route`)
        }
        // Only the proxy forwards; for it, a deny must leave the app untouched.
        if (client.name === 'proxy' && !c.expect.allow) t.equal(cluster.upstream.requests.length, before, 'proxy: the app got nothing')
      }
    })
  }

  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  for (const client of clients) {
    t.match(metrics, new RegExp(`gatehouse_decisions_total\\{entrypoint="${client.name}",decision="allow"\\} [1-9]`), `${client.name}: allows counted`)
    t.match(metrics, new RegExp(`gatehouse_decision_duration_seconds_count\\{entrypoint="${client.name}"\\} [1-9]`), `${client.name}: decision time recorded`)
  }
})

// The second table (issue 13): roles from groups and client roles, inheritance, permissions,
// all_roles, groups, verified e-mail domains and hosts, asked of every entry point.
t.test('every entry point applies roles, permissions, groups, e-mail and host requirements identically', async (t) => {
  const cluster = await startCluster(t, 1, { users: RBAC_USERS })
  const policy = `${RBAC_POLICY}  - { name: this host, path: /by-host/**, hosts: [app.example.test], allow: public }
  - { name: another host, path: /other-host/**, hosts: ['*.other.example'], allow: public }
`
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), grpc: { enabled: true, host: '127.0.0.1', port: 0 } }, { 'app.yaml': policy }))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const token = async (user: string): Promise<Record<string, string>> => ({ authorization: `Bearer ${(await cluster.standin.passwordGrant(user, `${user}-password`)).access_token}` })
  const [pam, bob, carl, una] = await Promise.all(['pam', 'bob', 'carl', 'una'].map(token)) as [Record<string, string>, Record<string, string>, Record<string, string>, Record<string, string>]
  const host = { host: 'app.example.test' }
  const cases: Case[] = [
    { name: 'a group mapped to admin opens the admin area', path: '/admin/settings', headers: pam, expect: { allow: true, status: 200, identity: { 'x-auth-request-permissions': 'users:read,users:write,catalogue:write,catalogue:read', 'x-auth-request-groups': '/platform/admins' } } },
    { name: 'no mapped group: 403', path: '/admin/settings', headers: bob, expect: { allow: false, status: 403 } },
    { name: 'a permission through two levels of inheritance', method: 'PUT', path: '/catalogue/7', headers: pam, expect: { allow: true, status: 200 } },
    { name: 'a permission the roles lack', method: 'PUT', path: '/catalogue/7', headers: bob, expect: { allow: false, status: 403 } },
    { name: 'a permission a group grants', path: '/catalogue/7', headers: bob, expect: { allow: true, status: 200, identity: { 'x-auth-request-permissions': 'catalogue:read' } } },
    { name: 'all_roles from a client role and a group', path: '/audit/log', headers: carl, expect: { allow: true, status: 200, identity: { 'x-auth-request-permissions': 'audit:read,catalogue:read' } } },
    { name: 'all_roles with one missing', path: '/audit/log', headers: bob, expect: { allow: false, status: 403 } },
    { name: 'groups', path: '/platform/tools', headers: pam, expect: { allow: true, status: 200 } },
    { name: 'groups, not in one', path: '/platform/tools', headers: carl, expect: { allow: false, status: 403 } },
    { name: 'a verified e-mail domain', path: '/partners/deals', headers: pam, expect: { allow: true, status: 200 } },
    { name: 'the domain, unverified', path: '/partners/deals', headers: una, expect: { allow: false, status: 403 } },
    { name: 'user admin needs a permission even for another spelling', path: '/Admin/Users/1', headers: bob, expect: { allow: false, status: 403 } },
    { name: 'a rule for this host', path: '/by-host/x', headers: host, expect: { allow: true, status: 200, identity: {} } },
    { name: 'a rule for another host does not apply', path: '/other-host/x', headers: host, expect: { allow: false, status: 401 } }
  ]
  const clients: EntryPointClient[] = ENTRY_POINTS.map((make) => make(gatehouse, cluster.upstream, (fn) => t.teardown(fn)))
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      for (const client of clients) {
        const before = cluster.upstream.requests.length
        const got: Asked = await client.ask({ method: c.method ?? 'GET', path: c.path, headers: { ...host, ...c.headers } })
        t.equal(got.allow, c.expect.allow, `${client.name}: ${c.expect.allow ? 'allowed' : 'denied'}`)
        t.equal(got.status, c.expect.status, `${client.name}: status`)
        if (c.expect.identity !== undefined) {
          const identity = Object.fromEntries(Object.entries(got.identity).filter(([name]) => IDENTITY.test(name)))
          t.match(identity, c.expect.identity, `${client.name}: identity headers`)
          if (Object.keys(c.expect.identity).length === 0) t.same(identity, {}, `${client.name}: no identity on a public route`)
        }
        if (client.name === 'proxy' && !c.expect.allow) t.equal(cluster.upstream.requests.length, before, 'proxy: the app got nothing')
      }
    })
  }
  // Each deny was logged with the rule and what was missing, whichever way it came in.
  const denies = gatehouse.log.entries().filter((e) => e.msg === 'request' && e.decision === 'deny' && e.reason === 'missing_permission')
  t.ok(denies.length >= 4, 'every entry point logged the missing permission')
  t.ok(denies.every((e) => e.missing === 'permissions catalogue:write' || e.missing === 'permissions users:write'))
})

t.test('the gateway endpoints are not the app: a direct request for them never reaches the upstream', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings(), POLICIES))
  await gatehouse.started
  for (const path of ['/_gatehouse/auth', '/_gatehouse/ext-authz/hello', '/_gatehouse/start?rd=//evil.example']) {
    const res = await rawRequest(gatehouse.proxyUrl, path)
    t.not(res.status, 200, `${path}: no credentials, no allow`)
  }
  const start = await rawRequest(gatehouse.proxyUrl, '/_gatehouse/start?rd=//evil.example')
  t.equal(start.headers.location, '/_gatehouse/login?rd=%2F', 'start only sends browsers to same-origin paths')
  t.equal(cluster.upstream.requests.length, 0)
})

t.test('browser page loads: Envoy redirects unless ext_authz.redirect_browsers is false; nginx gets a 401 and /start', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), ext_authz: { redirect_browsers: false } }, POLICIES))
  await gatehouse.started
  const page = { accept: 'text/html' }
  const envoy = await rawRequest(gatehouse.proxyUrl, '/_gatehouse/ext-authz/reports', { headers: page })
  t.equal(envoy.status, 401)
  t.equal(envoy.headers['www-authenticate'], 'Bearer realm="gatehouse"')
  const nginx = await rawRequest(gatehouse.proxyUrl, '/_gatehouse/auth', { headers: { ...page, 'x-original-uri': '/reports', 'x-original-method': 'GET' } })
  t.equal(nginx.status, 401, 'auth_request passes only 401 and 403 on: the redirect is nginx\'s error_page')
  const start = await rawRequest(gatehouse.proxyUrl, '/_gatehouse/start?rd=%2Freports')
  t.equal(start.status, 302)
  t.equal(start.headers.location, '/_gatehouse/login?rd=%2Freports')
  const traefik = await rawRequest(gatehouse.proxyUrl, '/_gatehouse/auth', { headers: { ...page, 'x-forwarded-uri': '/reports', 'x-forwarded-method': 'GET' } })
  t.equal(traefik.status, 302, 'Traefik passes the 302 to the browser')
  t.equal(traefik.headers.location, '/_gatehouse/login?rd=%2Freports')
})

t.test('Envoy HTTP: the answer names every spoofable header Gatehouse did not set, in both spellings, and ignores a body', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings(), POLICIES))
  await gatehouse.started
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const token = (await cluster.standin.passwordGrant('bob', 'bob-password')).access_token
  const res = await rawRequest(gatehouse.proxyUrl, '/_gatehouse/ext-authz/api/items', {
    method: 'POST',
    // Envoy's check carries the original Content-Type with no body (Content-Length: 0).
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': '0', 'x-auth-request-custom': 'spoofed' }
  })
  t.equal(res.status, 200)
  const removed = String(res.headers['x-envoy-auth-headers-to-remove']).split(', ')
  t.ok(removed.includes('x-auth-request-access-token'), 'a configured header Gatehouse did not set')
  t.ok(removed.includes('x_auth_request_user'), 'the underscore spelling of one it did set')
  t.ok(removed.includes('x-auth-request-custom'), 'a spoofed header of the family the request carried')
  t.notOk(removed.includes('x-auth-request-user'), 'never one Gatehouse sets: Envoy overwrites those')
  t.equal(res.headers['x-auth-request-preferred-username'], 'bob')
  t.equal(cluster.upstream.requests.length, 0, 'a check is not a request to the app')
})
