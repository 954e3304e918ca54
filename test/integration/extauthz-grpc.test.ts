// Envoy's gRPC ext_authz service (envoy.service.auth.v3.Authorization/Check) and the gRPC
// health service, called over real sockets by a real @grpc/grpc-js client, as Envoy calls them.
import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import { createLoggers } from '../../src/log.ts'
import { generateSigningKey, startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { startFaultProxy } from '../fixtures/fault-proxy.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { formLogin } from '../fixtures/sessions.ts'
import { keycloakSettings, startGatehouse, writeConfig, type CapturedLog } from '../fixtures/gatehouse.ts'
import { CHECK_PATH, checkRequestCodec, grpcClient, rawGrpcCall, type DecodedCheckResponse, type DecodedHeaderOption } from '../fixtures/grpc-client.ts'

const POLICY = `
rules:
  - name: public pages
    paths: [/public/**]
    allow: public
  - name: admin area
    paths: [/admin/**]
    roles: [admin]
`

// google.rpc.Code values (protocol-facts §B.2).
const OK = 0
const INVALID_ARGUMENT = 3
const DEADLINE_EXCEEDED = 4
const NOT_FOUND = 5
const PERMISSION_DENIED = 7
const RESOURCE_EXHAUSTED = 8
const UNAUTHENTICATED = 16
const CANCELLED = 1
const UNAVAILABLE = 14

const standin = await startKeycloakStandin()
t.teardown(() => standin.close())
const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const GRPC = { grpc: { enabled: true, host: '127.0.0.1', port: 0 } }
const config = writeConfig(t.testdir(), { ...keycloakSettings(standin, upstream.url), ...GRPC }, { 'app.yaml': POLICY })
const gatehouse = await startGatehouse(t, config)
await gatehouse.app.keycloak.jwks.refresh('manual')
const client = grpcClient(gatehouse.urls.grpc as string)
t.teardown(() => client.close())

const alice = await standin.passwordGrant('alice', 'alice-password')
const bob = await standin.passwordGrant('bob', 'bob-password')

/** A CheckRequest as Envoy builds it for `method path` (protocol-facts §B.1), `headers` in its map. */
function checkRequest (method: string, path: string, headers: Record<string, string> = {}): Record<string, unknown> {
  return {
    attributes: {
      source: { address: { socket_address: { address: '203.0.113.7', port_value: 51000 } } },
      request: {
        http: {
          id: '1',
          method,
          path,
          host: 'app.example.test',
          scheme: 'https',
          headers: { ':authority': 'app.example.test', ':method': method, ':path': path, ':scheme': 'https', ...headers }
        }
      }
    }
  }
}

/** `gatehouse_decisions_total{entrypoint="ext_authz_grpc"}` by decision, from the admin listener. */
async function decisions (): Promise<{ allow: number, deny: number, redirect: number }> {
  const scrape = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  const count = (decision: string): number => Number(new RegExp(`^gatehouse_decisions_total\\{entrypoint="ext_authz_grpc",decision="${decision}"\\} (\\d+)$`, 'm').exec(scrape)?.[1] ?? 0)
  return { allow: count('allow'), deny: count('deny'), redirect: count('redirect') }
}

/** The headers of a response as an object (name → value), after checking each overwrites. */
function headersOf (t: Test, options: DecodedHeaderOption[] | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const option of options ?? []) {
    t.equal(option.append_action, 'OVERWRITE_IF_EXISTS_OR_ADD', `${option.header?.key}: overwritten, never appended`)
    t.equal(option.append, undefined, `${option.header?.key}: the deprecated append is unset`)
    out[option.header?.key ?? ''] = option.header?.value ?? ''
  }
  return out
}

/** The realm roles of a token, in its order. */
function realmRolesOf (token: string): string[] {
  return (JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()) as { realm_access: { roles: string[] } }).realm_access.roles
}

t.test('a valid token is allowed: OK, identity headers that overwrite, every spoofable header not set removed', async (t) => {
  const result = await client.check(checkRequest('GET', '/dashboard?tab=1', {
    authorization: `Bearer ${alice.access_token}`,
    'x-auth-request-user': 'mallory',
    x_auth_request_roles: 'admin',
    'x-auth-request-anything': 'forged'
  }))
  t.equal(result.code, OK, 'the call succeeds')
  const response = result.response as DecodedCheckResponse
  t.same(response.status, { code: OK })
  t.equal(response.denied_response, undefined)
  t.same(headersOf(t, response.ok_response?.headers), {
    'x-auth-request-user': standin.user('alice').sub,
    'x-auth-request-preferred-username': 'alice',
    'x-auth-request-email': 'alice@example.test',
    'x-auth-request-groups': '/staff/admins',
    'x-auth-request-roles': [...realmRolesOf(alice.access_token), 'gatehouse:operator'].join(','),
    'x-auth-request-mode': 'token'
  }, 'the spoofed x-auth-request-user is overwritten with the real one')
  t.same([...response.ok_response?.headers_to_remove ?? []].sort(), [
    'x-auth-request-access-token',
    'x-auth-request-anything',
    'x-auth-request-permissions',
    'x_auth_request_access_token',
    'x_auth_request_email',
    'x_auth_request_groups',
    'x_auth_request_mode',
    'x_auth_request_permissions',
    'x_auth_request_preferred_username',
    'x_auth_request_roles',
    'x_auth_request_user'
  ], 'the underscore spellings, the unset access-token and permissions headers (no role grants any here) and the forged extra')
})

t.test('the same token again: the same identity headers; headers_to_remove follows each request', async (t) => {
  const configured = [
    'x-auth-request-access-token',
    'x-auth-request-permissions',
    'x_auth_request_access_token',
    'x_auth_request_email',
    'x_auth_request_groups',
    'x_auth_request_mode',
    'x_auth_request_permissions',
    'x_auth_request_preferred_username',
    'x_auth_request_roles',
    'x_auth_request_user'
  ]
  const token = await standin.mintAccessToken({}, { username: 'bob' })
  for (const [spoofed, extra] of [[{}, []], [{}, []], [{ 'x-auth-request-forged': 'x' }, ['x-auth-request-forged']], [{}, []], [{ X_AUTH_REQUEST_OTHER: 'y' }, ['x_auth_request_other']]] as const) {
    const result = await client.check(checkRequest('GET', '/dashboard', { authorization: `Bearer ${token}`, ...spoofed }))
    t.equal(result.response?.status?.code, OK)
    t.same(headersOf(t, result.response?.ok_response?.headers)['x-auth-request-preferred-username'], 'bob')
    t.same([...result.response?.ok_response?.headers_to_remove ?? []].sort(), [...configured, ...extra].sort(), `spoofed: ${JSON.stringify(spoofed)}`)
  }
})

t.test('a session cookie is a credential, read under the name the scheme Envoy forwards gives it', async (t) => {
  const browser = new BrowserClient()
  const login = await formLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')
  t.equal(login.status, 200, 'signed in through the proxy')
  const session = browser.cookie(gatehouse.proxyUrl, 'gatehouse_session')
  t.ok(session, 'over http the cookie has no __Host- prefix')
  const cookie = `gatehouse_session=${session?.value ?? ''}`
  const allowed = await client.check(checkRequest('GET', '/dashboard', { cookie, 'x-forwarded-proto': 'http' }))
  t.equal(allowed.response?.status?.code, OK)
  t.equal(headersOf(t, allowed.response?.ok_response?.headers)['x-auth-request-preferred-username'], 'alice')
  // Behind TLS the session cookie is __Host-gatehouse_session: this one is not it.
  const overTls = await client.check(checkRequest('GET', '/dashboard', { cookie, 'x-forwarded-proto': 'https, http' }))
  t.equal(overTls.response?.status?.code, UNAUTHENTICATED)
  const noProto = await client.check({ attributes: { request: { http: { method: 'GET', path: '/dashboard', scheme: 'https', headers: { cookie } } } } })
  t.equal(noProto.response?.status?.code, UNAUTHENTICATED, 'without x-forwarded-proto, http.scheme says https')
})

/** The DeniedHttpResponse of a check, after asserting the call succeeded with `code` in its status. */
async function denied (t: Test, request: Record<string, unknown>, code: number): Promise<{ status: string | number | undefined, headers: Record<string, string>, body: string }> {
  const result = await client.check(request)
  t.equal(result.code, OK, 'the call itself succeeds: the deny is in the CheckResponse')
  const response = result.response as DecodedCheckResponse
  t.equal(response.status?.code, code)
  t.equal(response.ok_response, undefined)
  const deniedResponse = response.denied_response
  return { status: deniedResponse?.status?.code, headers: headersOf(t, deniedResponse?.headers), body: deniedResponse?.body ?? '' }
}

t.test('no credentials: UNAUTHENTICATED with a 401 and WWW-Authenticate for the client', async (t) => {
  const deny = await denied(t, checkRequest('GET', '/dashboard', { accept: 'application/json' }), UNAUTHENTICATED)
  t.equal(deny.status, 'Unauthorized')
  t.same(deny.headers, { 'www-authenticate': 'Bearer realm="gatehouse"', 'cache-control': 'no-store', 'content-type': 'application/json; charset=utf-8' })
  t.same(JSON.parse(deny.body), { error: 'unauthorized' })
})

t.test('an expired token: UNAUTHENTICATED with a 401 naming invalid_token', async (t) => {
  const now = Math.floor(Date.now() / 1000)
  const expired = await standin.mintAccessToken({ exp: now - 120, iat: now - 420 })
  const deny = await denied(t, checkRequest('GET', '/dashboard', { authorization: `Bearer ${expired}` }), UNAUTHENTICATED)
  t.equal(deny.status, 'Unauthorized')
  t.match(deny.headers['www-authenticate'], /^Bearer realm="gatehouse", error="invalid_token", error_description="[^"]+"$/)
  t.equal((JSON.parse(deny.body) as { error: string }).error, 'invalid_token')
})

t.test('a token without the required role: PERMISSION_DENIED with a 403', async (t) => {
  const deny = await denied(t, checkRequest('GET', '/admin/users', { authorization: `Bearer ${bob.access_token}` }), PERMISSION_DENIED)
  t.equal(deny.status, 'Forbidden')
  t.same(deny.headers, { 'cache-control': 'no-store', 'content-type': 'application/json; charset=utf-8' })
  t.same(JSON.parse(deny.body), { error: 'forbidden' })
  const allowed = await client.check(checkRequest('GET', '/admin/users', { authorization: `Bearer ${alice.access_token}` }))
  t.equal(allowed.response?.status?.code, OK, 'the role holder is let through')
})

t.test('a browser page load without credentials: a 302 to the login page, the way back in rd', async (t) => {
  const deny = await denied(t, checkRequest('GET', '/dashboard?tab=1', { accept: 'text/html,application/xhtml+xml' }), UNAUTHENTICATED)
  t.equal(deny.status, 'Found')
  t.same(deny.headers, { location: `/_gatehouse/login?rd=${encodeURIComponent('/dashboard?tab=1')}`, 'cache-control': 'no-store' })
  t.equal(deny.body, '')
  const post = await denied(t, checkRequest('POST', '/dashboard', { accept: 'text/html' }), UNAUTHENTICATED)
  t.equal(post.status, 'Unauthorized', 'a form post is no page load: 401')
})

t.test('with ext_authz.redirect_browsers off, a browser page load gets the 401', async (t) => {
  const settings = { ...keycloakSettings(standin, upstream.url), ...GRPC, ext_authz: { redirect_browsers: false } }
  const other = await startGatehouse(t, writeConfig(t.testdir(), settings, { 'app.yaml': POLICY }))
  const otherClient = grpcClient(other.urls.grpc as string)
  t.teardown(() => otherClient.close())
  const result = await otherClient.check(checkRequest('GET', '/dashboard', { accept: 'text/html' }))
  t.equal(result.response?.status?.code, UNAUTHENTICATED)
  t.equal(result.response?.denied_response?.status?.code, 'Unauthorized')
})

t.test('a path Gatehouse will not decide on: INVALID_ARGUMENT with a 400, before any credential is looked at', async (t) => {
  for (const [method, path] of [['GET', '/admin;x=1'], ['GET', '/admin%3bx=1'], ['GET', '/public/..%2fadmin'], ['OPTIONS', '*'], ['GET', 'http://app.example.test/admin'], ['GET', '']] as const) {
    const deny = await denied(t, checkRequest(method, path, { authorization: `Bearer ${alice.access_token}` }), INVALID_ARGUMENT)
    t.equal(deny.status, 'BadRequest', `${method} ${JSON.stringify(path)}`)
    t.equal((JSON.parse(deny.body) as { error: string }).error, 'bad_request')
  }
})

t.test('the path-bypass spellings are decided on the normalised path', async (t) => {
  for (const path of ['//admin/users', '/ADMIN/users', '/%61dmin/users', '/public/../admin/users']) {
    const deny = await denied(t, checkRequest('GET', path, { authorization: `Bearer ${bob.access_token}` }), PERMISSION_DENIED)
    t.equal(deny.status, 'Forbidden', path)
  }
})

t.test('headers in header_map (encode_raw_headers) are read as in headers', async (t) => {
  const raw = (key: string, value: string): { key: string, raw_value: Buffer } => ({ key, raw_value: Buffer.from(value, 'latin1') })
  const request = (path: string, entries: Array<{ key: string, raw_value: Buffer }>): Record<string, unknown> => ({
    attributes: {
      request: {
        http: {
          method: 'GET',
          path,
          host: 'app.example.test',
          header_map: { headers: [raw(':authority', 'app.example.test'), raw(':method', 'GET'), raw(':path', path), ...entries] }
        }
      }
    }
  })
  const allowed = await client.check(request('/dashboard', [raw('authorization', `Bearer ${alice.access_token}`), raw('X-Auth-Request-Anything', 'forged')]))
  t.equal(allowed.response?.status?.code, OK)
  const identity = headersOf(t, allowed.response?.ok_response?.headers)
  t.equal(identity['x-auth-request-preferred-username'], 'alice')
  t.ok(allowed.response?.ok_response?.headers_to_remove?.includes('x-auth-request-anything'), 'a spoofed header in header_map is removed (its name lower-cased)')

  const browser = await client.check(request('/dashboard', [raw('accept', 'text/html')]))
  t.equal(browser.response?.denied_response?.status?.code, 'Found', 'accept read from header_map')
  const none = await client.check(request('/dashboard', []))
  t.equal(none.response?.denied_response?.status?.code, 'Unauthorized')
  const role = await client.check(request('/admin/users', [raw('authorization', `Bearer ${bob.access_token}`)]))
  t.equal(role.response?.status?.code, PERMISSION_DENIED)
  // Two Authorization headers are ambiguous; joined as Envoy joins them in `headers`, they are no bearer token.
  const twice = await client.check(request('/dashboard', [raw('authorization', `Bearer ${alice.access_token}`), raw('authorization', `Bearer ${bob.access_token}`)]))
  t.equal(twice.response?.status?.code, UNAUTHENTICATED)
})

/**
 * Bytes written out by hand: hex pairs, and ASCII text in double quotes for string payloads.
 * Every tag is `field number << 3 | wire type` (0 varint, 2 length-delimited); every length
 * counts the bytes of the field's payload that follows.
 */
function wire (...parts: string[]): Buffer {
  const bytes: number[] = []
  for (const token of parts.join(' ').match(/"[^"]*"|[0-9a-f]{2}/g) ?? []) {
    if (token.startsWith('"')) bytes.push(...Buffer.from(token.slice(1, -1), 'latin1'))
    else bytes.push(parseInt(token, 16))
  }
  return Buffer.from(bytes)
}

/** The fields of one protobuf message by number, read by hand: varints as numbers, length-delimited as bytes. */
function fieldsOf (bytes: Buffer | number | undefined): Map<number, Array<number | Buffer>> {
  const out = new Map<number, Array<number | Buffer>>()
  if (!Buffer.isBuffer(bytes)) return out
  let i = 0
  const varint = (): number => {
    let value = 0
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[i++] as number
      value += (byte & 0x7f) * 2 ** shift
      if (byte < 0x80) return value
    }
  }
  while (i < bytes.length) {
    const tag = varint()
    const field = Math.floor(tag / 8)
    const type = tag & 7
    let value: number | Buffer
    if (type === 0) value = varint()
    else if (type === 2) {
      const length = varint()
      value = bytes.subarray(i, i + length)
      i += length
    } else throw new Error(`wire type ${type} not expected in a CheckResponse`)
    out.set(field, [...out.get(field) ?? [], value])
  }
  return out
}

const first = (fields: Map<number, Array<number | Buffer>>, field: number): number | Buffer | undefined => fields.get(field)?.[0]
const text = (value: number | Buffer | undefined): string | undefined => Buffer.isBuffer(value) ? value.toString('utf8') : undefined

// GET /public/page from 203.0.113.7 with a forged x-auth-request-user, as Envoy encodes it
// (protocol-facts §B.1), with two fields the repository's protos leave out, which must be skipped.
const PUBLIC_PAGE = wire(
  '0a 92 01', // CheckRequest.attributes = 1, LEN (1<<3|2 = 0x0a), 146 bytes
  '0a 15', //   AttributeContext.source = 1, LEN, 21 bytes
  '0a 13', //     Peer.address = 1, LEN, 19 bytes
  '0a 11', //       Address.socket_address = 1, LEN, 17 bytes
  '12 0b "203.0.113.7"', //   SocketAddress.address = 2, LEN (2<<3|2 = 0x12), 11 bytes
  '18 b8 8e 03', //           SocketAddress.port_value = 3, VARINT (3<<3|0 = 0x18), 51000
  '22 79', //   AttributeContext.request = 4, LEN (4<<3|2 = 0x22), 121 bytes
  '0a 06', //     Request.time = 1, LEN, 6 bytes: a Timestamp the trimmed protos leave out
  '08 80 e2 cf aa 06', // Timestamp.seconds = 1, VARINT, 1700000000
  '12 6f', //     Request.http = 2, LEN, 111 bytes
  '0a 02 "42"', //  HttpRequest.id = 1, LEN
  '12 03 "GET"', // HttpRequest.method = 2, LEN
  '1a 15', //       HttpRequest.headers = 3, LEN (3<<3|2 = 0x1a), 21 bytes: one map entry
  '0a 05 ":path"', //        entry key = 1, LEN
  '12 0c "/public/page"', // entry value = 2, LEN
  '1a 1e', //       HttpRequest.headers = 3, LEN, 30 bytes: another entry
  '0a 13 "x-auth-request-user"', // key = 1
  '12 07 "mallory"', //             value = 2
  '22 0c "/public/page"', //     HttpRequest.path = 4, LEN (0x22)
  '2a 10 "app.example.test"', // HttpRequest.host = 5, LEN (5<<3|2 = 0x2a)
  '32 05 "https"', //            HttpRequest.scheme = 6, LEN (6<<3|2 = 0x32)
  '52 06 "HTTP/2"' //            HttpRequest.protocol = 10, LEN (10<<3|2 = 0x52): left out of the protos
)

// A browser's GET /dashboard?tab=1 without credentials: the fewest fields a check can carry.
const BROWSER_PAGE = wire(
  '0a 30', //   CheckRequest.attributes = 1, LEN, 48 bytes
  '22 2e', //     AttributeContext.request = 4, LEN, 46 bytes
  '12 2c', //       Request.http = 2, LEN, 44 bytes
  '12 03 "GET"', //   HttpRequest.method = 2, LEN
  '1a 13', //         HttpRequest.headers = 3, LEN, 19 bytes: one map entry
  '0a 06 "accept"', //    key = 1
  '12 09 "text/html"', // value = 2
  '22 10 "/dashboard?tab=1"' // HttpRequest.path = 4, LEN
)

// The same page load with Envoy's encode_raw_headers: header_map instead of headers.
const BROWSER_PAGE_RAW_HEADERS = wire(
  '0a 2c', //   CheckRequest.attributes = 1, LEN, 44 bytes
  '22 2a', //     AttributeContext.request = 4, LEN, 42 bytes
  '12 28', //       Request.http = 2, LEN, 40 bytes
  '12 03 "GET"', //   HttpRequest.method = 2, LEN
  '22 0a "/dashboard"', // HttpRequest.path = 4, LEN
  '6a 15', //         HttpRequest.header_map = 13, LEN (13<<3|2 = 0x6a), 21 bytes
  '0a 13', //           HeaderMap.headers = 1, LEN, 19 bytes: one HeaderValue
  '0a 06 "accept"', //    HeaderValue.key = 1, LEN
  '1a 09 "text/html"' //  HeaderValue.raw_value = 3, LEN (3<<3|2 = 0x1a)
)

t.test('wire format: a hand-encoded CheckRequest is answered, and the answer decodes by hand', async (t) => {
  const allowed = await client.checkRaw(PUBLIC_PAGE)
  t.equal(allowed.code, OK)
  const response = fieldsOf(allowed.response)
  t.equal(first(fieldsOf(first(response, 1)), 1) ?? 0, OK, 'CheckResponse.status = 1, Status.code = 1: OK')
  t.equal(response.get(2), undefined, 'no denied_response = 2')
  const ok = fieldsOf(first(response, 3))
  const removed = (ok.get(5) ?? []).map(text)
  t.ok(removed.includes('x-auth-request-user'), 'OkHttpResponse.headers_to_remove = 5 names the forged header')
  t.ok(removed.includes('x_auth_request_user'))
  t.equal(ok.get(2), undefined, 'a public route sets no header')
  const line = gatehouse.log.entries().findLast((e) => e.msg === 'request' && e.reqId === '42')
  t.match(line, { method: 'GET', path: '/public/page', status: 200, decision: 'allow', reason: 'public', ip: '203.0.113.7' }, 'the access line has the id and the client address')

  const redirected = await client.checkRaw(BROWSER_PAGE)
  t.equal(redirected.code, OK)
  const deny = fieldsOf(redirected.response)
  t.equal(first(fieldsOf(first(deny, 1)), 1), UNAUTHENTICATED, 'CheckResponse.status.code: UNAUTHENTICATED')
  t.equal(deny.get(3), undefined, 'no ok_response = 3')
  const deniedResponse = fieldsOf(first(deny, 2))
  t.equal(first(fieldsOf(first(deniedResponse, 1)), 1), 302, 'DeniedHttpResponse.status = 1, HttpStatus.code = 1: 302')
  const headers = (deniedResponse.get(2) ?? []).map((option) => {
    const fields = fieldsOf(option)
    const header = fieldsOf(first(fields, 1))
    t.equal(fields.get(2), undefined, 'HeaderValueOption.append = 2 is not sent')
    t.equal(first(fields, 3), 2, 'HeaderValueOption.append_action = 3: OVERWRITE_IF_EXISTS_OR_ADD (2)')
    return [text(first(header, 1)), text(first(header, 2))]
  })
  t.same(Object.fromEntries(headers), { location: '/_gatehouse/login?rd=%2Fdashboard%3Ftab%3D1', 'cache-control': 'no-store' }, 'HeaderValue.key = 1 and value = 2')
  t.equal(text(first(deniedResponse, 3)) ?? '', '', 'DeniedHttpResponse.body = 3 is empty for a redirect')

  const raw = await client.checkRaw(BROWSER_PAGE_RAW_HEADERS)
  const rawDeny = fieldsOf(first(fieldsOf(raw.response), 2))
  t.equal(first(fieldsOf(first(rawDeny, 1)), 1), 302, 'accept was read from header_map = 13 (without it: 401)')
})

t.test('wire format: the repository\'s protos encode a CheckRequest to the same bytes as the hand encoding', async (t) => {
  t.same(checkRequestCodec.encode({ attributes: { request: { http: { method: 'GET', headers: { accept: 'text/html' }, path: '/dashboard?tab=1' } } } }), BROWSER_PAGE)
  t.same(checkRequestCodec.encode({ attributes: { request: { http: { method: 'GET', path: '/dashboard', header_map: { headers: [{ key: 'accept', raw_value: Buffer.from('text/html') }] } } } } }), BROWSER_PAGE_RAW_HEADERS)
  t.same(checkRequestCodec.decode(PUBLIC_PAGE), {
    attributes: {
      source: { address: { socket_address: { address: '203.0.113.7', port_value: 51000 } } },
      request: {
        http: {
          id: '42',
          method: 'GET',
          headers: { ':path': '/public/page', 'x-auth-request-user': 'mallory' },
          path: '/public/page',
          host: 'app.example.test',
          scheme: 'https'
        }
      }
    }
  }, 'every field lands where protocol-facts §B.1 puts it; the ones left out are skipped')
})

t.test('a call with nothing to decide on fails with INVALID_ARGUMENT; the service keeps answering', async (t) => {
  const undecodable = await client.checkRaw(wire('0a 05 12 03 "GE"')) // attributes claims 5 bytes, 4 follow
  t.same(undecodable, { code: INVALID_ARGUMENT, details: 'the message is not a CheckRequest' })
  const badWireType = await client.checkRaw(wire('0f 00')) // field 1, wire type 7: no such type
  t.equal(badWireType.code, INVALID_ARGUMENT)
  const empty = await client.check({})
  t.same(empty, { code: INVALID_ARGUMENT, details: 'attributes.request.http is missing' })
  const noMethod = await client.check({ attributes: { request: { http: { path: '/dashboard' } } } })
  t.same(noMethod, { code: INVALID_ARGUMENT, details: 'attributes.request.http.method is missing' })
  const noPath = await client.check({ attributes: { request: { http: { method: 'GET' } } } })
  t.equal(noPath.code, OK, 'a request without a path is decided on, and refused')
  t.equal(noPath.response?.status?.code, INVALID_ARGUMENT)
  t.equal(noPath.response?.denied_response?.status?.code, 'BadRequest')
  const after = await client.check(checkRequest('GET', '/public/x'))
  t.equal(after.response?.status?.code, OK, 'still answering')
})

t.test('a CheckRequest over grpc.max_message_bytes is refused with RESOURCE_EXHAUSTED, never decided on', async (t) => {
  const max = config.grpc.max_message_bytes
  t.equal(max, 64 * 1024, 'the default')
  const decided = await decisions()
  const big = await client.check(checkRequest('GET', '/dashboard', { authorization: `Bearer ${alice.access_token}`, 'x-padding': 'x'.repeat(max) }))
  t.equal(big.code, RESOURCE_EXHAUSTED)
  t.match(big.details, /larger than max/)
  t.same(await decisions(), decided, 'no decision was made')
  const justUnder = await client.check(checkRequest('GET', '/dashboard', { authorization: `Bearer ${alice.access_token}`, 'x-padding': 'x'.repeat(max - 4096) }))
  t.equal(justUnder.response?.status?.code, OK, 'a large one under the limit is decided on')
  const after = await client.check(checkRequest('GET', '/public/x'))
  t.equal(after.response?.status?.code, OK, 'still answering')
})

t.test('each check counts as an ext_authz_grpc decision', async (t) => {
  const before = await decisions()
  await client.check(checkRequest('GET', '/dashboard', { authorization: `Bearer ${alice.access_token}` }))
  await client.check(checkRequest('GET', '/dashboard'))
  await client.check(checkRequest('GET', '/admin/x', { authorization: `Bearer ${bob.access_token}` }))
  await client.check(checkRequest('GET', '/dashboard', { accept: 'text/html' }))
  await client.check({}) // not decided: no decision counted
  const after = await decisions()
  t.same({ allow: after.allow - before.allow, deny: after.deny - before.deny, redirect: after.redirect - before.redirect }, { allow: 1, deny: 2, redirect: 1 })
  const scrape = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(scrape, /^gatehouse_decision_duration_seconds_count\{entrypoint="ext_authz_grpc"\} [1-9]\d*$/m)
})

type Line = Record<string, unknown>

/** A {@link CapturedLog} that can also wait for a line: `waitFor(match)` resolves with the first line that matches. */
function waitableLog (): CapturedLog & { waitFor: (match: (line: Line) => boolean) => Promise<Line> } {
  const lines: Line[] = []
  const waiters: Array<{ match: (line: Line) => boolean, resolve: (line: Line) => void }> = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, done) {
      for (const text of chunk.toString('utf8').split('\n')) {
        if (text === '') continue
        const line = JSON.parse(text) as Line
        lines.push(line)
        for (const waiter of waiters.filter((w) => w.match(line))) {
          waiters.splice(waiters.indexOf(waiter), 1)
          waiter.resolve(line)
        }
      }
      done()
    }
  })
  const { log: logger, access } = createLoggers({ level: 'debug', destination: sink })
  return {
    logger,
    access,
    text: () => lines.map((line) => JSON.stringify(line)).join('\n'),
    entries: () => [...lines],
    waitFor: (match) => {
      const seen = lines.find(match)
      return seen !== undefined ? Promise.resolve(seen) : new Promise((resolve) => { waiters.push({ match, resolve }) })
    }
  }
}

t.test('a decision that cannot finish by the deadline: DEADLINE_EXCEEDED at the deadline, and its late answer is dropped', async (t) => {
  const fault = await startFaultProxy({ target: standin.baseUrl })
  t.teardown(() => fault.close())
  const log = waitableLog()
  const base = keycloakSettings(standin, upstream.url, fault.url)
  // Keycloak's own timeout far beyond the call's deadline; every unknown kid may refresh the JWKS.
  const settings = { ...base, ...GRPC, keycloak: { ...(base.keycloak as object), timeout_ms: 60_000, jwks: { min_refresh_interval_seconds: 0 } } }
  const slow = await startGatehouse(t, writeConfig(t.testdir(), settings, { 'app.yaml': POLICY }), { log })
  t.equal(await slow.app.keycloak.jwks.refresh('manual'), true)
  const slowClient = grpcClient(slow.urls.grpc as string)
  t.teardown(() => slowClient.close())

  // Background start-up (the first health round) is over: no call of its own is in flight.
  await slow.started
  await fault.setMode('blackhole')
  const unknownKid = await standin.mintAccessToken({}, { key: await generateSigningKey() })
  const bytes = checkRequestCodec.encode(checkRequest('GET', '/dashboard', { authorization: `Bearer ${unknownKid}`, 'x-request-id': 'late-1' }))
  // As Envoy sends its grpc_service.timeout: in grpc-timeout only, so the server alone ends the call.
  const result = await rawGrpcCall(slow.urls.grpc as string, CHECK_PATH, bytes, { 'grpc-timeout': '300m' })
  t.equal(result.code, DEADLINE_EXCEEDED)
  t.equal(result.message, null, 'no CheckResponse')
  t.equal(fault.connectionCount().byMode.blackhole, 1, 'the unknown kid sent a JWKS refresh to Keycloak')
  t.equal(fault.openConnections(), 1, 'which is still waiting: the call ended at its deadline, not when the decision did')

  // Keycloak goes away: the refresh fails, the token is refused, and the answer is not written.
  await fault.setMode('refuse')
  // The decision ends either way: dropped, or (wrongly) answered with an access line.
  const DROPPED = 'ext_authz check ended before its decision; answer dropped'
  const ended = await log.waitFor((line) => line.msg === DROPPED || (line.msg === 'request' && line.reqId === 'late-1'))
  t.match(ended, { msg: DROPPED, reason: 'token_unknown_kid' }, 'the decision finished after the deadline and was dropped')
  t.equal(log.entries().filter((line) => line.msg === 'request' && line.reqId === 'late-1').length, 0, 'no access line: nothing was answered')
  t.same(log.entries().filter((line) => (line.level as number) >= 50), [], 'no error')
  const next = await slowClient.check(checkRequest('GET', '/public/x'))
  t.equal(next.response?.status?.code, OK, 'the service goes on answering')
})

t.test('health: SERVING for the server and for the Authorization service, NOT_FOUND for others', async (t) => {
  t.same(await client.health(''), { code: OK, details: '', response: { status: 'SERVING' } })
  t.same(await client.health('envoy.service.auth.v3.Authorization'), { code: OK, details: '', response: { status: 'SERVING' } })
  t.same(await client.health('grpc.health.v1.Health.Nope'), { code: NOT_FOUND, details: 'unknown service' })
  const unknown = client.watch('some.other.Service')
  t.equal(await unknown.next(), 'SERVICE_UNKNOWN', 'Watch answers SERVICE_UNKNOWN and keeps the call open')
})

t.test('shutting down: health turns NOT_SERVING for its watchers, a check in flight still gets its answer, then the listener is gone', async (t) => {
  const fault = await startFaultProxy({ target: standin.baseUrl })
  t.teardown(() => fault.close())
  const base = keycloakSettings(standin, upstream.url, fault.url)
  const settings = { ...base, ...GRPC, keycloak: { ...(base.keycloak as object), timeout_ms: 60_000, jwks: { min_refresh_interval_seconds: 0 } } }
  const stopping = await startGatehouse(t, writeConfig(t.testdir(), settings, { 'app.yaml': POLICY }))
  t.equal(await stopping.app.keycloak.jwks.refresh('manual'), true)
  const watcher = grpcClient(stopping.urls.grpc as string)
  t.teardown(() => watcher.close())
  const overall = watcher.watch('')
  const authorization = watcher.watch('envoy.service.auth.v3.Authorization')
  t.equal(await overall.next(), 'SERVING')
  t.equal(await authorization.next(), 'SERVING')

  // A check held by a black-holed JWKS refresh is in flight when the shutdown begins.
  await stopping.started
  await fault.setMode('blackhole')
  const unknownKid = await standin.mintAccessToken({}, { key: await generateSigningKey() })
  const connections = fault.connectionCount().total
  const inFlight = watcher.check(checkRequest('GET', '/dashboard', { authorization: `Bearer ${unknownKid}` }))
  await fault.waitForConnections(connections + 1)
  const stopped = stopping.stop()
  t.equal(await overall.next(), 'NOT_SERVING')
  t.equal(await authorization.next(), 'NOT_SERVING')
  t.same(await overall.ended, { code: OK, details: 'OK' }, 'each watch ends once NOT_SERVING is sent')
  t.same(await authorization.ended, { code: OK, details: 'OK' })

  await fault.setMode('refuse')
  const answered = await inFlight
  t.equal(answered.code, OK, 'the check in flight was answered')
  t.equal(answered.response?.denied_response?.status?.code, 'Unauthorized')
  await stopped
  const late = grpcClient(stopping.urls.grpc as string)
  t.teardown(() => late.close())
  t.equal((await late.health('')).code, UNAVAILABLE, 'nothing listens any more')
})

t.test('a check still in flight when the shutdown grace period ends is cut, and the stop completes', async (t) => {
  const fault = await startFaultProxy({ target: standin.baseUrl })
  t.teardown(() => fault.close())
  const log = waitableLog()
  const base = keycloakSettings(standin, upstream.url, fault.url)
  const settings = {
    ...base,
    ...GRPC,
    server: { host: '127.0.0.1', port: 0, shutdown_timeout_ms: 100 },
    keycloak: { ...(base.keycloak as object), timeout_ms: 60_000, jwks: { min_refresh_interval_seconds: 0 } }
  }
  const cut = await startGatehouse(t, writeConfig(t.testdir(), settings, { 'app.yaml': POLICY }), { log })
  t.equal(await cut.app.keycloak.jwks.refresh('manual'), true)
  await cut.started
  const cutClient = grpcClient(cut.urls.grpc as string)
  t.teardown(() => cutClient.close())
  await fault.setMode('blackhole')
  const unknownKid = await standin.mintAccessToken({}, { key: await generateSigningKey() })
  const connections = fault.connectionCount().total
  const inFlight = cutClient.check(checkRequest('GET', '/dashboard', { authorization: `Bearer ${unknownKid}`, 'x-request-id': 'cut-1' }))
  await fault.waitForConnections(connections + 1)

  await cut.stop()
  t.ok(log.entries().some((line) => line.msg === 'shutdown grace period over; closing remaining connections'), 'the grace period ran out')
  const answered = await inFlight
  t.equal(answered.code, CANCELLED, 'the connection was cut')
  t.equal(answered.response, undefined)
  // The decision still finishes once Keycloak goes away; nothing is written to the cut call.
  await fault.setMode('refuse')
  const ended = await log.waitFor((line) => line.msg === 'ext_authz check ended before its decision; answer dropped' || (line.msg === 'request' && line.reqId === 'cut-1'))
  t.equal(ended.msg, 'ext_authz check ended before its decision; answer dropped')
})
