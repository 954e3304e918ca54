// Envoy's gRPC ext_authz service (envoy.service.auth.v3.Authorization/Check) and the gRPC
// health service, called over real sockets by a real @grpc/grpc-js client, as Envoy calls them.
import t from 'tap'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { grpcClient, type DecodedCheckResponse, type DecodedHeaderOption } from '../fixtures/grpc-client.ts'

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

const standin = await startKeycloakStandin()
t.teardown(() => standin.close())
const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const GRPC = { grpc: { enabled: true, host: '127.0.0.1', port: 0 } }
const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...keycloakSettings(standin, upstream.url), ...GRPC }, { 'app.yaml': POLICY }))
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

/** The headers of a response as an object (name → value), after checking each overwrites. */
function headersOf (t: Tap.Test, options: DecodedHeaderOption[] | undefined): Record<string, string> {
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
    'x_auth_request_access_token',
    'x_auth_request_email',
    'x_auth_request_groups',
    'x_auth_request_mode',
    'x_auth_request_preferred_username',
    'x_auth_request_roles',
    'x_auth_request_user'
  ], 'the underscore spellings, the unset access-token header and the forged extra')
})

/** The DeniedHttpResponse of a check, after asserting the call succeeded with `code` in its status. */
async function denied (t: Tap.Test, request: Record<string, unknown>, code: number): Promise<{ status: string | number | undefined, headers: Record<string, string>, body: string }> {
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
