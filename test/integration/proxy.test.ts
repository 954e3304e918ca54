import t from 'tap'
import { request as httpRequest } from 'node:http'
import { createServer } from 'node:net'
import { generateKeyPair, SignJWT } from 'jose'
import { createHmac } from 'node:crypto'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'

const POLICY = `
rules:
  - name: public pages
    paths: [/public/**]
    allow: public
  - name: admin area
    paths: [/admin/**]
    roles: [admin]
  - name: operators
    paths: [/ops/**]
    roles: ['gatehouse:operator']
  - name: never
    paths: [/actuator/**]
    allow: deny
`

const standin = await startKeycloakStandin()
t.teardown(() => standin.close())
const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const config = writeConfig(t.testdir(), keycloakSettings(standin, upstream.url), { 'app.yaml': POLICY })
const gatehouse = await startGatehouse(t, config)
await gatehouse.app.keycloak.jwks.refresh('manual')

const alice = await standin.passwordGrant('alice', 'alice-password')
const bob = await standin.passwordGrant('bob', 'bob-password')
const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

/** Runs `fn` and reports how many requests reached the upstream meanwhile. */
async function upstreamCalls (fn: () => Promise<unknown>): Promise<number> {
  const before = upstream.requests.length
  await fn()
  return upstream.requests.length - before
}

t.test('a valid token reaches the upstream with exactly the expected identity headers', async (t) => {
  const res = await rawRequest(gatehouse.proxyUrl, '/dashboard?tab=1&x=%2F', {
    headers: {
      ...bearer(alice.access_token),
      'X-Auth-Request-User': 'mallory',
      'x-auth-request-roles': 'admin',
      'X-AUTH-REQUEST-EMAIL': 'mallory@evil.example',
      'X_Auth_Request_Preferred_Username': 'mallory',
      'x-auth-request-groups': '/root',
      'X-Auth-Request-Mode': 'local',
      'X-Auth-Request-Access-Token': 'forged',
      'X-Auth-Request-Anything': 'forged'
    }
  })
  t.equal(res.status, 200)
  const seen = upstream.requests.at(-1)
  t.ok(seen)
  if (seen === undefined) return
  t.equal(seen.url, '/dashboard?tab=1&x=%2F', 'path and query as sent')
  const identity = Object.fromEntries(Object.entries(seen.headers).filter(([name]) => name.startsWith('x-auth-request-')))
  const aliceUser = standin.user('alice')
  const realmRoles = (JSON.parse(Buffer.from(alice.access_token.split('.')[1] as string, 'base64url').toString()) as { realm_access: { roles: string[] } }).realm_access.roles
  t.ok(realmRoles.includes('admin'))
  t.same(identity, {
    'x-auth-request-user': aliceUser.sub,
    'x-auth-request-preferred-username': 'alice',
    'x-auth-request-email': 'alice@example.test',
    'x-auth-request-groups': '/staff/admins',
    'x-auth-request-roles': [...realmRoles, 'gatehouse:operator'].join(','),
    'x-auth-request-mode': 'token'
  })
  t.notOk(seen.rawHeaderNames.some((name) => name.includes('_')), 'no underscore spelling reaches the upstream')
  t.equal(seen.headers.authorization, `Bearer ${alice.access_token}`, "the client's Authorization passes through")
})

t.test('the identity headers list every realm role and the client roles as client:role', async (t) => {
  await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(alice.access_token) })
  const roles = String(upstream.requests.at(-1)?.headers['x-auth-request-roles']).split(',')
  t.ok(roles.includes('admin'))
  t.ok(roles.includes('gatehouse:operator'))
  t.notOk(roles.includes('operator'), 'a client role never passes as a realm role')
})

t.test('each bad token is a 401 and the upstream receives nothing', async (t) => {
  const now = Math.floor(Date.now() / 1000)
  const key = standin.signingKey()
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url')
  const claims = JSON.parse(Buffer.from(alice.access_token.split('.')[1] as string, 'base64url').toString()) as Record<string, unknown>
  const noneToken = `${b64({ alg: 'none', typ: 'JWT', kid: key.kid })}.${b64(claims)}.`
  const hsInput = `${b64({ alg: 'HS256', typ: 'JWT', kid: key.kid })}.${b64(claims)}`
  const hsToken = `${hsInput}.${createHmac('sha256', JSON.stringify(standin.publishedKeys().find((k) => k.kid === key.kid))).update(hsInput).digest('base64url')}`
  const { privateKey: otherKey } = await generateKeyPair('RS256')
  const sameKidOtherKey = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' }).sign(otherKey)

  const cases: Array<[string, string, string]> = [
    ['alg none', noneToken, 'token_alg_not_allowed'],
    ['HS256 signed with the public key', hsToken, 'token_alg_not_allowed'],
    ['wrong iss', await standin.mintAccessToken({ iss: 'https://evil.example/realms/test' }), 'token_wrong_issuer'],
    ['wrong aud and azp', await standin.mintAccessToken({ aud: 'other-app', azp: 'other-app' }), 'token_wrong_audience'],
    ['expired', await standin.mintAccessToken({ exp: now - 120, iat: now - 420 }), 'token_expired'],
    ['nbf in the future', await standin.mintAccessToken({ nbf: now + 600 }), 'token_not_yet_valid'],
    ['malformed', 'this.is.not-a-jwt', 'token_malformed'],
    ['an ID token', alice.id_token as string, 'token_wrong_type'],
    ['signed by another key with the same kid', sameKidOtherKey, 'token_invalid_signature']
  ]
  for (const [label, token, reason] of cases) {
    const calls = await upstreamCalls(async () => {
      const res = await rawRequest(gatehouse.proxyUrl, '/private', { headers: bearer(token) })
      t.equal(res.status, 401, label)
      t.match(res.headers['www-authenticate'], /^Bearer realm="gatehouse", error="invalid_token"/, label)
      t.same(JSON.parse(res.body).error, 'invalid_token', label)
    })
    t.equal(calls, 0, `${label}: upstream got nothing`)
    const line = gatehouse.log.entries().findLast((e) => e.msg === 'request')
    t.equal(line?.reason, reason, `${label}: the log names the reason`)
  }
})

t.test('no token at all is a 401 with WWW-Authenticate: Bearer', async (t) => {
  const calls = await upstreamCalls(async () => {
    const res = await rawRequest(gatehouse.proxyUrl, '/private')
    t.equal(res.status, 401)
    // RFC 6750 §3.1: no error code when the request carried no token at all.
    t.equal(res.headers['www-authenticate'], 'Bearer realm="gatehouse"')
    const basic = await rawRequest(gatehouse.proxyUrl, '/private', { headers: { authorization: 'Basic YWxpY2U6eA==' } })
    t.equal(basic.status, 401, 'another scheme is no bearer token')
    t.equal(basic.headers['www-authenticate'], 'Bearer realm="gatehouse"')
  })
  t.equal(calls, 0)
})

t.test('public routes pass without a token; role routes need the role', async (t) => {
  const pub = await rawRequest(gatehouse.proxyUrl, '/public/logo.png', { headers: { 'x-auth-request-user': 'mallory' } })
  t.equal(pub.status, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], undefined, 'spoofed headers are stripped on public routes too')

  const calls = await upstreamCalls(async () => {
    const res = await rawRequest(gatehouse.proxyUrl, '/admin/users', { headers: bearer(bob.access_token) })
    t.equal(res.status, 403)
    t.same(JSON.parse(res.body), { error: 'forbidden' })
    const ops = await rawRequest(gatehouse.proxyUrl, '/ops/restart', { headers: bearer(bob.access_token), method: 'POST' })
    t.equal(ops.status, 403, 'a client role is needed, and bob lacks it')
    const never = await rawRequest(gatehouse.proxyUrl, '/actuator/env', { headers: bearer(alice.access_token) })
    t.equal(never.status, 403, 'deny rules refuse everyone')
  })
  t.equal(calls, 0, 'the upstream got none of the refused requests')

  t.equal((await rawRequest(gatehouse.proxyUrl, '/admin/users', { headers: bearer(alice.access_token) })).status, 200)
  t.equal((await rawRequest(gatehouse.proxyUrl, '/ops/restart', { headers: bearer(alice.access_token), method: 'POST' })).status, 200)
})

t.test('every spelling of /admin reaches the same decision, and the app sees the normalised path', async (t) => {
  const spellings = ['/admin', '//admin', '/./admin', '/public/../admin', '/%61dmin', '/admin/']
  for (const path of spellings) {
    const calls = await upstreamCalls(async () => {
      t.equal((await rawRequest(gatehouse.proxyUrl, path, { headers: bearer(bob.access_token) })).status, 403, `bob: ${path}`)
      t.equal((await rawRequest(gatehouse.proxyUrl, path)).status, 401, `anonymous: ${path}`)
    })
    t.equal(calls, 0, `${path}: nothing reached the app`)
    t.equal((await rawRequest(gatehouse.proxyUrl, path, { headers: bearer(alice.access_token) })).status, 200, `alice: ${path}`)
    t.equal(upstream.requests.at(-1)?.url, path.endsWith('/') ? '/admin/' : '/admin', `the app received the normalised form of ${path}`)
  }
})

t.test('paths that cannot be normalised safely are a 400 and never reach the app', async (t) => {
  const calls = await upstreamCalls(async () => {
    for (const path of ['/public%2f..%2fadmin', '/public/..%5cadmin', '/..', '/a%zz', '/public/%2e%2e/%2e%2e/etc']) {
      const res = await rawRequest(gatehouse.proxyUrl, path, { headers: bearer(alice.access_token) })
      t.equal(res.status, 400, path)
    }
  })
  t.equal(calls, 0)
})

t.test('the sidecar prefix is never proxied', async (t) => {
  const calls = await upstreamCalls(async () => {
    t.equal((await rawRequest(gatehouse.proxyUrl, '/_gatehouse/anything', { headers: bearer(alice.access_token) })).status, 404)
    t.equal((await rawRequest(gatehouse.proxyUrl, '//_gatehouse/../_gatehouse/x', { headers: bearer(alice.access_token) })).status, 404)
  })
  t.equal(calls, 0)
})

t.test('X-Forwarded-For/Proto/Host describe the client, not what it claims', async (t) => {
  await rawRequest(gatehouse.proxyUrl, '/x', {
    headers: { ...bearer(alice.access_token), host: 'app.example.test', 'x-forwarded-for': '6.6.6.6', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', forwarded: 'for=6.6.6.6', 'x-request-id': 'req-123' }
  })
  const seen = upstream.requests.at(-1)?.headers
  t.equal(seen?.['x-forwarded-for'], '127.0.0.1')
  t.equal(seen?.['x-forwarded-proto'], 'http')
  t.equal(seen?.['x-forwarded-host'], 'app.example.test')
  t.equal(seen?.host, 'app.example.test', 'the Host header passes through')
  t.equal(seen?.forwarded, undefined)
  t.equal(seen?.['x-request-id'], 'req-123', 'a well-formed request id is kept')
})

t.test('request bodies are streamed to the app, not buffered', async (t) => {
  // The app answers after the first chunk; the client sends the rest only after the answer
  // arrived. A buffering proxy would wait for the whole body and never answer.
  upstream.handle((req, res) => {
    if (req.url !== '/upload') return false
    res.end(`got ${req.headers['transfer-encoding'] ?? 'fixed'}`)
    return true
  })
  t.teardown(() => upstream.handle(null))
  const streamingUpstream = await startStreamingUpstream()
  t.teardown(() => streamingUpstream.close())
  const streamConfig = writeConfig(t.testdir(), keycloakSettings(standin, streamingUpstream.url))
  const streaming = await startGatehouse(t, streamConfig)
  await streaming.app.keycloak.jwks.refresh('manual')
  const answer = await new Promise<string>((resolve, reject) => {
    const url = new URL(streaming.proxyUrl)
    const req = httpRequest({ host: url.hostname, port: url.port, method: 'POST', path: '/upload', headers: { ...bearer(alice.access_token), 'transfer-encoding': 'chunked' } }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => { req.end('second chunk'); resolve(body) })
    })
    req.on('error', reject)
    req.write('first chunk')
  })
  t.equal(answer, 'first chunk')
})

async function startStreamingUpstream (): Promise<{ url: string, close: () => Promise<void> }> {
  const { createServer: createHttpServer } = await import('node:http')
  const server = createHttpServer((req, res) => {
    req.once('data', (chunk: Buffer) => res.end(chunk.toString()))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }) }
}

t.test('an unreachable app is a 502 and a slow one a 504, with generic bodies', async (t) => {
  const closedPort = await new Promise<number>((resolve) => {
    const probe = createServer()
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as { port: number }).port
      probe.close(() => resolve(port))
    })
  })
  const refused = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(standin, `http://127.0.0.1:${closedPort}`)))
  await refused.app.keycloak.jwks.refresh('manual')
  const bad = await rawRequest(refused.proxyUrl, '/x', { headers: bearer(alice.access_token) })
  t.equal(bad.status, 502)
  t.same(JSON.parse(bad.body), { error: 'bad_gateway' })
  t.match(refused.log.entries().find((e) => e.msg === 'upstream unreachable'), { level: 40, kind: 'refused', code: 'ECONNREFUSED' })
  const refusedMetrics = await (await fetch(`${refused.adminUrl}/metrics`)).text()
  t.match(refusedMetrics, /^gatehouse_upstream_errors_total\{kind="refused"\} 1$/m)
  t.match(refusedMetrics, /^gatehouse_requests_total\{decision="allow",auth_mode="token",code="5xx"\} 1$/m)

  const slowUpstream = await startEchoUpstream()
  t.teardown(() => slowUpstream.close())
  slowUpstream.handle(() => true) // never answers
  const slow = await startGatehouse(t, writeConfig(t.testdir(), { ...keycloakSettings(standin, slowUpstream.url), upstream: { url: slowUpstream.url, timeout_ms: 200 } }))
  await slow.app.keycloak.jwks.refresh('manual')
  const late = await rawRequest(slow.proxyUrl, '/x', { headers: bearer(alice.access_token) })
  t.equal(late.status, 504)
  t.same(JSON.parse(late.body), { error: 'gateway_timeout' })
  t.match(slow.log.entries().find((e) => e.msg === 'upstream timed out'), { level: 40, kind: 'timeout' })

  // An app that drops the connection mid-request.
  slowUpstream.handle((req) => { req.socket.destroy(); return true })
  const dropped = await rawRequest(slow.proxyUrl, '/x', { headers: bearer(alice.access_token) })
  t.equal(dropped.status, 502)
  t.same(JSON.parse(dropped.body), { error: 'bad_gateway' })
  t.match(slow.log.entries().find((e) => e.msg === 'upstream failed'), { level: 40, kind: 'reset' })
  const slowMetrics = await (await fetch(`${slow.adminUrl}/metrics`)).text()
  t.match(slowMetrics, /^gatehouse_upstream_errors_total\{kind="timeout"\} 1$/m)
  t.match(slowMetrics, /^gatehouse_upstream_errors_total\{kind="reset"\} 1$/m)
  t.match(slowMetrics, /^gatehouse_upstream_errors_total\{kind="refused"\} 0$/m)
})

t.test('the access log has one line per request with decision and reason, and no token', async (t) => {
  await rawRequest(gatehouse.proxyUrl, '/logged?code=secret-code', { headers: bearer(alice.access_token) })
  const line = gatehouse.log.entries().findLast((e) => e.msg === 'request')
  t.match(line, { method: 'GET', path: '/logged', status: 200, decision: 'allow', reason: 'authenticated', auth_mode: 'token', user: standin.user('alice').sub })
  t.type(line?.latency_ms, 'number')
  const text = gatehouse.log.text()
  t.notMatch(text, alice.access_token)
  t.notMatch(text, bob.access_token)
  t.notMatch(text, 'secret-code', 'query strings are not logged')
})

t.test('metrics count decisions and token verifications', async (t) => {
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_requests_total\{decision="allow",auth_mode="token",code="2xx"\} \d+/)
  t.match(metrics, /gatehouse_requests_total\{decision="deny",auth_mode="none",code="4xx"\} \d+/)
  t.match(metrics, /gatehouse_token_verifications_total\{result="cached"\} \d+/)
  t.match(metrics, /gatehouse_token_verifications_total\{result="expired"\} 1/)
  t.match(metrics, /gatehouse_request_duration_seconds_bucket/)
  t.match(metrics, /gatehouse_jwks_refresh_total\{result="success"\} \d+/)
  t.match(metrics, /gatehouse_jwks_age_seconds \d/)
  t.match(metrics, /gatehouse_process_cpu_seconds_total/)
})

t.test('behind a trusted proxy the X-Forwarded chain is extended, not replaced', async (t) => {
  const trusted = await startGatehouse(t, writeConfig(t.testdir(), { ...keycloakSettings(standin, upstream.url), server: { host: '127.0.0.1', port: 0, trust_proxy: ['127.0.0.1/8'] } }))
  await trusted.app.keycloak.jwks.refresh('manual')
  await rawRequest(trusted.proxyUrl, '/x', { headers: { ...bearer(alice.access_token), 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example.com' } })
  const seen = upstream.requests.at(-1)?.headers
  t.equal(seen?.['x-forwarded-for'], '203.0.113.7, 127.0.0.1')
  t.equal(seen?.['x-forwarded-proto'], 'https')
  t.equal(seen?.['x-forwarded-host'], 'app.example.com')
  const line = trusted.log.entries().findLast((e) => e.msg === 'request')
  t.equal(line?.ip, '203.0.113.7', 'the access log names the real client')
})

t.test('the access token can be passed to the app, as a header or as Authorization', async (t) => {
  const passing = await startGatehouse(t, writeConfig(t.testdir(), { ...keycloakSettings(standin, upstream.url), headers: { pass_access_token: true, pass_authorization_header: true } }, { 'app.yaml': POLICY }))
  await passing.app.keycloak.jwks.refresh('manual')
  await rawRequest(passing.proxyUrl, '/x', { headers: { ...bearer(alice.access_token), 'x-auth-request-access-token': 'forged' } })
  const seen = upstream.requests.at(-1)?.headers
  t.equal(seen?.['x-auth-request-access-token'], alice.access_token)
  t.equal(seen?.authorization, `Bearer ${alice.access_token}`)
  t.equal((await rawRequest(passing.proxyUrl, '/public/x', { headers: { authorization: 'Bearer forged-for-a-public-page' } })).status, 200)
  t.equal(upstream.requests.at(-1)?.headers.authorization, undefined, 'when Gatehouse owns Authorization, a client-sent one never reaches the app')
})

t.test('HEAD and OPTIONS follow the same rules as any method', async (t) => {
  const calls = await upstreamCalls(async () => {
    t.equal((await rawRequest(gatehouse.proxyUrl, '/private', { method: 'HEAD' })).status, 401)
    t.equal((await rawRequest(gatehouse.proxyUrl, '/private', { method: 'OPTIONS' })).status, 401)
  })
  t.equal(calls, 0)
  t.equal((await rawRequest(gatehouse.proxyUrl, '/public/x', { method: 'OPTIONS' })).status, 200)
  t.equal(upstream.requests.at(-1)?.method, 'OPTIONS')
})
