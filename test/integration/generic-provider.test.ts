import { createHash, randomBytes } from 'node:crypto'
import { request } from 'node:http'
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'
import t from 'tap'
import type { Test } from 'tap'
import { BrowserClient } from '../fixtures/browser-client.ts'
import type { BrowserResponse } from '../fixtures/browser-client.ts'
import { launchChromium } from '../fixtures/browser.ts'
import {
  DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_RESOURCE, genericProviderFor
} from '../fixtures/generic-provider.ts'
import type { GenericProvider } from '../fixtures/generic-provider.ts'
import { requireProgram } from '../fixtures/system-programs.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'


/** A callback nothing listens on: the code flow stops at the redirect to it. */
const CALLBACK = 'http://127.0.0.1:9/callback'
const AFTER_LOGOUT = 'http://127.0.0.1:9/signed-out'

interface Tokens {
  access_token: string
  id_token: string
  refresh_token: string
  token_type: string
  expires_in: number
  scope: string
}

/** A fresh remote key set, as a client that never cached `/jwks` builds it. */
function jwksOf (op: GenericProvider): ReturnType<typeof createRemoteJWKSet> {
  return createRemoteJWKSet(new URL(op.endpoints.jwks))
}

/** Follows redirects while they stay on the provider; stops at a page or at a redirect elsewhere. */
async function onProvider (op: GenericProvider, browser: BrowserClient, res: BrowserResponse): Promise<BrowserResponse> {
  let current = res
  for (let hop = 0; hop < 10; hop++) {
    const location = current.headers.location
    if (current.status < 300 || current.status >= 400 || typeof location !== 'string') return current
    const next = new URL(location, current.url)
    if (next.origin !== op.baseUrl) return current
    current = await browser.get(next.href, { follow: false })
  }
  throw new Error('too many redirects on the provider')
}

interface AuthorizationRequest {
  verifier: string
  state: string
  nonce: string
  url: URL
}

function authorizationRequest (op: GenericProvider, extra: Record<string, string> = {}): AuthorizationRequest {
  const verifier = randomBytes(32).toString('base64url')
  const state = randomBytes(8).toString('hex')
  const nonce = randomBytes(8).toString('hex')
  const url = new URL(op.endpoints.authorization)
  const params = {
    client_id: op.clientId,
    response_type: 'code',
    scope: 'openid profile email',
    redirect_uri: CALLBACK,
    state,
    nonce,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    ...extra
  }
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value)
  return { verifier, state, nonce, url }
}

/** The authorization step in a browser: the sign-in form (when no session), then the redirect back with a code. */
async function authorize (op: GenericProvider, browser: BrowserClient, username = 'carol', password = `${username}-password`): Promise<{ request: AuthorizationRequest, callback: URL }> {
  const req = authorizationRequest(op)
  let res = await onProvider(op, browser, await browser.get(req.url.href, { follow: false }))
  if (res.status === 200) res = await onProvider(op, browser, await browser.submit(res, { username, password }, { follow: false }))
  const location = res.headers.location
  if (typeof location !== 'string' || !location.startsWith(CALLBACK)) throw new Error(`the flow ended at ${res.status} ${res.url}: ${res.body.slice(0, 200)}`)
  return { request: req, callback: new URL(location) }
}

/** A token endpoint request with client_secret_post (RFC 6749 §2.3.1). */
async function tokenRequest (op: GenericProvider, params: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown>, headers: Headers }> {
  const response = await fetch(op.endpoints.token, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...headers },
    body: new URLSearchParams(params)
  })
  return { status: response.status, body: await response.json() as Record<string, unknown>, headers: response.headers }
}

function withClientSecret (op: GenericProvider, params: Record<string, string>): Record<string, string> {
  return { ...params, client_id: op.clientId, client_secret: op.clientSecret }
}

/** The whole code flow with PKCE and client_secret_post; resolves with the token response. */
async function signIn (op: GenericProvider, browser = new BrowserClient(), username = 'carol'): Promise<Tokens & { nonce: string }> {
  const { request: req, callback } = await authorize(op, browser, username)
  const code = callback.searchParams.get('code') ?? ''
  const result = await tokenRequest(op, withClientSecret(op, {
    grant_type: 'authorization_code', code, redirect_uri: CALLBACK, code_verifier: req.verifier
  }))
  if (result.status !== 200) throw new Error(`code exchange failed with ${result.status}: ${JSON.stringify(result.body)}`)
  return { ...result.body as unknown as Tokens, nonce: req.nonce }
}

async function refresh (op: GenericProvider, refreshToken: string): Promise<{ status: number, body: Record<string, unknown> }> {
  return await tokenRequest(op, withClientSecret(op, { grant_type: 'refresh_token', refresh_token: refreshToken }))
}

async function userinfo (op: GenericProvider, accessToken: string | undefined): Promise<{ status: number, body: Record<string, unknown>, challenge: string | null }> {
  const response = await fetch(op.endpoints.userinfo, accessToken === undefined ? {} : { headers: { authorization: `Bearer ${accessToken}` } })
  return { status: response.status, body: await response.json() as Record<string, unknown>, challenge: response.headers.get('www-authenticate') }
}

function endSessionUrl (op: GenericProvider, params: Record<string, string>): string {
  const url = new URL(op.endpoints.endSession ?? '')
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value)
  return url.href
}

/** A client's back-channel logout endpoint: the echo upstream, answering `status` to every POST. */
async function startLogoutReceiver (t: Test, status = 200): Promise<{ url: string, received: () => Array<{ contentType: string | undefined, body: URLSearchParams }> }> {
  const app = await startEchoUpstream()
  t.teardown(() => app.close())
  if (status !== 200) app.handle((_req, res) => { res.writeHead(status).end(); return true })
  return {
    url: `${app.url}/backchannel-logout`,
    received: () => app.requests.map((r) => ({ contentType: r.headers['content-type'], body: new URLSearchParams(r.body) }))
  }
}

/** A GET with a chosen Host header (fetch cannot set one), answering the parsed JSON body. */
async function getJsonAs (url: string, host: string): Promise<Record<string, unknown>> {
  return await new Promise((resolve, reject) => {
    request(url, { headers: { host, accept: 'application/json' }, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => resolve(JSON.parse(body) as Record<string, unknown>))
      res.on('error', reject)
    }).on('error', reject).end()
  })
}

const started = new WeakMap<Test, GenericProvider[]>()

/** A provider closed at teardown; {@link scenario} checks that nothing inside it failed. */
async function provider (t: Test, options?: Parameters<typeof genericProviderFor>[1]): Promise<GenericProvider> {
  const op = await genericProviderFor(t, options)
  started.set(t, [...started.get(t) ?? [], op])
  return op
}

/** A test that ends by checking every provider it started had no internal error (a 500). */
function scenario (name: string, fn: (t: Test) => Promise<void>): void {
  t.test(name, async (t) => {
    await fn(t)
    for (const op of started.get(t) ?? []) t.same(op.serverErrors(), [], 'no error inside the provider')
  })
}

scenario('discovery: an issuer without /realms/, oidc-provider\'s own paths, client_secret_post only, no password grant', async (t) => {
  const op = await provider(t)
  t.equal(op.issuer, `${op.baseUrl}/oidc`)
  t.equal(op.discoveryUrl, `${op.issuer}/.well-known/openid-configuration`)
  const response = await fetch(op.discoveryUrl)
  t.equal(response.status, 200)
  const text = await response.text()
  t.notMatch(text, '/realms/', 'nothing in discovery has Keycloak\'s layout')
  t.notMatch(text, 'openid-connect')
  const discovery = JSON.parse(text) as Record<string, unknown>
  t.equal(discovery['issuer'], op.issuer)
  t.equal(discovery['authorization_endpoint'], `${op.issuer}/auth`)
  t.equal(discovery['token_endpoint'], `${op.issuer}/token`)
  t.equal(discovery['jwks_uri'], `${op.issuer}/jwks`)
  t.equal(discovery['userinfo_endpoint'], `${op.issuer}/me`)
  t.equal(discovery['end_session_endpoint'], `${op.issuer}/session/end`)
  t.equal(discovery['revocation_endpoint'], `${op.issuer}/token/revocation`)
  t.same(op.endpoints, {
    discovery: op.discoveryUrl,
    authorization: `${op.issuer}/auth`,
    token: `${op.issuer}/token`,
    jwks: `${op.issuer}/jwks`,
    userinfo: `${op.issuer}/me`,
    endSession: `${op.issuer}/session/end`,
    revocation: `${op.issuer}/token/revocation`
  }, 'the fixture\'s endpoints are the ones discovery publishes')
  t.same(discovery['token_endpoint_auth_methods_supported'], ['client_secret_post'])
  t.same(discovery['grant_types_supported'], ['authorization_code', 'refresh_token', 'client_credentials'])
  t.same(discovery['response_types_supported'], ['code'])
  t.same(discovery['code_challenge_methods_supported'], ['S256'])
  t.equal(discovery['backchannel_logout_supported'], true)
  t.equal(discovery['backchannel_logout_session_supported'], true)
  t.notOk('introspection_endpoint' in discovery, 'no introspection: RFC 9068 tokens are read locally')
  t.same(op.counts(), { '/oidc/.well-known/openid-configuration': 1 }, 'counting starts after the start-up self-check')
})

scenario('discovery URLs stay at the issuer whatever address it is fetched on, or follow it with discoveryUrls: request', async (t) => {
  const pinned = await provider(t)
  const viaOther = await getJsonAs(pinned.discoveryUrl, `localhost:${pinned.port}`)
  t.equal(viaOther['token_endpoint'], `${pinned.issuer}/token`)
  t.equal(viaOther['jwks_uri'], `${pinned.issuer}/jwks`)

  const following = await provider(t, { discoveryUrls: 'request' })
  const viaAlias = await getJsonAs(following.discoveryUrl, `localhost:${following.port}`)
  t.equal(viaAlias['token_endpoint'], `http://localhost:${following.port}/oidc/token`)
  t.equal(viaAlias['issuer'], following.issuer, 'the issuer itself never moves')
})

scenario('an issuer at the origin: issuerPath ""', async (t) => {
  const op = await provider(t, { issuerPath: '' })
  t.equal(op.issuer, op.baseUrl)
  const discovery = await (await fetch(`${op.baseUrl}/.well-known/openid-configuration`)).json() as Record<string, unknown>
  t.equal(discovery['issuer'], op.baseUrl)
  t.equal(discovery['token_endpoint'], `${op.baseUrl}/token`)
  const tokens = await signIn(op)
  t.equal(decodeJwt(tokens.id_token).iss, op.baseUrl)
})

scenario('the sign-in form works without JavaScript; a wrong password shows it again', async (t) => {
  const op = await provider(t)
  const browser = new BrowserClient()
  const page = await onProvider(op, browser, await browser.get(authorizationRequest(op).url.href, { follow: false }))
  t.equal(page.status, 200)
  t.match(new URL(page.url).pathname, /^\/oidc\/interaction\/[\w-]+$/)
  t.match(page.body, /<input id="username" name="username"/)
  t.match(page.body, /<input id="password" name="password" type="password"/)
  t.match(page.body, /<button id="login" type="submit">/)
  t.notMatch(page.body, '<script', 'nothing on the page needs JavaScript')
  const wrong = await browser.submit(page, { username: 'carol', password: 'not-it' }, { follow: false })
  t.equal(wrong.status, 200)
  t.match(wrong.body, '<p id="error" role="alert">Invalid username or password.</p>')
  t.match(wrong.body, 'value="carol"')
  const right = await onProvider(op, browser, await browser.submit(wrong, { username: 'carol', password: 'carol-password' }, { follow: false }))
  t.match(String(right.headers.location), `${CALLBACK}?code=`)
})

scenario('code flow with PKCE and client_secret_post: an RFC 9068 access token for the resource, identity in the ID token only', async (t) => {
  const op = await provider(t)
  const { request: req, callback } = await authorize(op, new BrowserClient())
  t.equal(callback.searchParams.get('state'), req.state)
  t.equal(callback.searchParams.get('iss'), op.issuer, 'RFC 9207 iss in the authorization response')
  const exchange = await tokenRequest(op, withClientSecret(op, {
    grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: CALLBACK, code_verifier: req.verifier
  }))
  t.equal(exchange.status, 200)
  const tokens = exchange.body as unknown as Tokens
  t.equal(tokens.token_type, 'Bearer')
  t.equal(tokens.expires_in, 300)
  t.equal(tokens.scope, 'openid profile email')
  t.type(tokens.refresh_token, 'string')

  const carol = op.user('carol')
  t.same(decodeProtectedHeader(tokens.access_token), { alg: 'RS256', typ: 'at+jwt', kid: op.signingKey().kid })
  const { payload: access } = await jwtVerify(tokens.access_token, jwksOf(op), { issuer: op.issuer, audience: DEFAULT_RESOURCE, typ: 'at+jwt' })
  t.same(Object.keys(access).sort(), ['aud', 'client_id', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub'], 'RFC 9068 §2.2 claims and nothing else')
  t.equal(access.aud, DEFAULT_RESOURCE)
  t.equal(access['client_id'], DEFAULT_CLIENT_ID)
  t.equal(access.sub, carol.sub)
  t.equal(access['scope'], 'openid profile email')
  t.equal((access.exp ?? 0) - (access.iat ?? 0), 300)

  t.same(decodeProtectedHeader(tokens.id_token), { alg: 'RS256', kid: op.signingKey().kid })
  const { payload: id } = await jwtVerify(tokens.id_token, jwksOf(op), { issuer: op.issuer, audience: DEFAULT_CLIENT_ID })
  t.match(id, {
    sub: carol.sub,
    nonce: req.nonce,
    preferred_username: 'carol',
    email: 'carol@example.test',
    email_verified: true,
    name: 'Carol Engineer',
    groups: ['engineering'],
    sid: String
  })
  t.notOk('realm_access' in id || 'azp' in id || 'typ' in id, 'no Keycloak claims in the ID token either')
  t.same(op.tokenRequests(), [{ grantType: 'authorization_code', clientId: DEFAULT_CLIENT_ID, status: 200, error: undefined }])
  t.equal(op.countOf('/token'), 1)
})

scenario('PKCE is required: an authorization request without code_challenge goes back with invalid_request', async (t) => {
  const op = await provider(t)
  const browser = new BrowserClient()
  const url = authorizationRequest(op).url
  url.searchParams.delete('code_challenge')
  url.searchParams.delete('code_challenge_method')
  const res = await onProvider(op, browser, await browser.get(url.href, { follow: false }))
  const back = new URL(String(res.headers.location))
  t.equal(back.origin + back.pathname, CALLBACK)
  t.equal(back.searchParams.get('error'), 'invalid_request')
  t.match(back.searchParams.get('error_description'), 'PKCE')
})

scenario('client_secret_basic is refused with 401 invalid_client, encoded or not; the secret in the form works', async (t) => {
  const op = await provider(t)
  t.equal(op.clientSecret, DEFAULT_CLIENT_SECRET)
  const basic = (secret: string): string => `Basic ${Buffer.from(`${op.clientId}:${secret}`).toString('base64')}`
  for (const secret of [encodeURIComponent(op.clientSecret), op.clientSecret]) {
    const res = await tokenRequest(op, { grant_type: 'client_credentials' }, { authorization: basic(secret) })
    t.equal(res.status, 401)
    t.equal(res.body['error'], 'invalid_client')
    t.equal(res.headers.get('www-authenticate'), `Basic realm="${op.issuer}", error="invalid_client"`)
  }
  const wrong = await tokenRequest(op, { grant_type: 'client_credentials', client_id: op.clientId, client_secret: 'app-secret' })
  t.equal(wrong.status, 401)
  t.equal(wrong.body['error'], 'invalid_client')
  const post = await tokenRequest(op, withClientSecret(op, { grant_type: 'client_credentials' }))
  t.equal(post.status, 200, 'client_secret_post with the +/= secret form-encoded')
  const service = decodeJwt(String(post.body['access_token']))
  t.equal(service.sub, DEFAULT_CLIENT_ID)
  t.equal(service['client_id'], DEFAULT_CLIENT_ID)
  t.equal(service.aud, DEFAULT_RESOURCE)
  t.same(op.tokenRequests().map((r) => r.status), [401, 401, 401, 200])
})

scenario('the password grant is not offered', async (t) => {
  const op = await provider(t)
  const res = await tokenRequest(op, withClientSecret(op, { grant_type: 'password', username: 'carol', password: 'carol-password' }))
  t.equal(res.status, 400)
  t.equal(res.body['error'], 'unsupported_grant_type')
})

scenario('userinfo answers the identity claims of a live access token, and refuses others', async (t) => {
  const op = await provider(t)
  const tokens = await signIn(op)
  const sid = decodeJwt(tokens.id_token)['sid']
  const ok = await userinfo(op, tokens.access_token)
  t.equal(ok.status, 200)
  t.same(ok.body, {
    sub: op.user('carol').sub,
    preferred_username: 'carol',
    name: 'Carol Engineer',
    given_name: 'Carol',
    family_name: 'Engineer',
    email: 'carol@example.test',
    email_verified: true,
    groups: ['engineering'],
    sid
  })

  const none = await userinfo(op, undefined)
  t.equal(none.status, 401)
  t.equal(none.body['error'], 'invalid_token')
  t.equal(none.challenge, `Bearer realm="${op.issuer}", error="invalid_token", error_description="invalid token provided"`)
  for (const [why, token] of [
    ['another audience', await op.mintAccessToken({}, { audience: 'https://other.example.test' })],
    ['expired', await op.mintAccessToken({}, { expired: true })],
    ['not an access token (typ JWT)', await op.mintAccessToken({}, { typ: 'JWT' })],
    ['the ID token', tokens.id_token]
  ] as const) {
    t.equal((await userinfo(op, token)).status, 401, why)
  }
  const service = await tokenRequest(op, withClientSecret(op, { grant_type: 'client_credentials' }))
  t.equal((await userinfo(op, String(service.body['access_token']))).status, 401, 'a client credentials token names no user')
  const noOpenid = await userinfo(op, await op.mintAccessToken({}, { scope: 'profile' }))
  t.equal(noOpenid.status, 403)
  t.equal(noOpenid.body['error'], 'insufficient_scope')
  const minted = await userinfo(op, await op.mintAccessToken({}, { username: 'dave', scope: 'openid email' }))
  t.same(minted.body, { sub: op.user('dave').sub, email: 'dave@example.test', email_verified: true }, 'claims follow the scope')
})

scenario('refresh rotates the refresh token; a spent one is invalid_grant and ends the grant', async (t) => {
  const op = await provider(t)
  const tokens = await signIn(op)
  const first = await refresh(op, tokens.refresh_token)
  t.equal(first.status, 200)
  const next = first.body as unknown as Tokens
  t.type(next.refresh_token, 'string')
  t.not(next.refresh_token, tokens.refresh_token, 'a new refresh token')
  t.not(next.access_token, tokens.access_token)
  t.equal(decodeProtectedHeader(next.access_token).typ, 'at+jwt')
  t.equal(decodeJwt(next.access_token).aud, DEFAULT_RESOURCE)
  t.equal(decodeJwt(next.id_token)['sid'], decodeJwt(tokens.id_token)['sid'], 'the same session')
  t.equal(decodeJwt(next.id_token)['preferred_username'], 'carol')

  const reuse = await refresh(op, tokens.refresh_token)
  t.equal(reuse.status, 400)
  t.equal(reuse.body['error'], 'invalid_grant')
  const after = await refresh(op, next.refresh_token)
  t.equal(after.status, 400, 'reuse of a spent token revoked the whole grant (RFC 9700 §4.14.2)')
  t.equal(after.body['error'], 'invalid_grant')
  t.same(op.tokenRequests().map((r) => `${r.grantType} ${r.status}`), ['authorization_code 200', 'refresh_token 200', 'refresh_token 400', 'refresh_token 400'])
})

scenario('with rotateRefreshTokens false the same refresh token keeps working', async (t) => {
  const op = await provider(t, { rotateRefreshTokens: false })
  const tokens = await signIn(op)
  const first = await refresh(op, tokens.refresh_token)
  t.equal(first.status, 200)
  t.equal(first.body['refresh_token'], tokens.refresh_token)
  t.equal((await refresh(op, tokens.refresh_token)).status, 200)
})

scenario('end-session sends state back to the post_logout_redirect_uri, records it, and ends the session', async (t) => {
  const op = await provider(t)
  const browser = new BrowserClient()
  const tokens = await signIn(op, browser)
  const page = await browser.get(endSessionUrl(op, {
    id_token_hint: tokens.id_token, client_id: op.clientId, post_logout_redirect_uri: AFTER_LOGOUT, state: 'logout-state-1'
  }), { follow: false })
  t.equal(page.status, 200)
  t.match(page.body, '<button id="logout" type="submit">Sign out</button>')
  t.match(page.body, '<script>', 'with an id_token_hint the page submits itself in a real browser')
  const out = await browser.submit(page, {}, { follow: false })
  t.equal(out.status, 303)
  t.equal(out.headers.location, `${AFTER_LOGOUT}?state=logout-state-1`)
  t.same(op.endSessionCalls(), [{
    method: 'GET', state: 'logout-state-1', postLogoutRedirectUri: AFTER_LOGOUT, clientId: op.clientId, idTokenHint: tokens.id_token, status: 200
  }])
  t.equal((await refresh(op, tokens.refresh_token)).body['error'], 'invalid_grant', 'the grant ended with the session')
  const again = await onProvider(op, browser, await browser.get(authorizationRequest(op).url.href, { follow: false }))
  t.equal(again.status, 200, 'the next authorization asks for the password again')
  t.match(again.body, 'id="login"')
})

scenario('end-session without state does not send the user back (requireLogoutState), unless told otherwise', async (t) => {
  const strict = await provider(t)
  const browser = new BrowserClient()
  await signIn(strict, browser)
  const page = await browser.get(endSessionUrl(strict, { client_id: strict.clientId, post_logout_redirect_uri: AFTER_LOGOUT }), { follow: false })
  t.notMatch(page.body, '<script>', 'without an id_token_hint the user is asked')
  const out = await browser.submit(page, {}, { follow: false })
  t.equal(out.status, 303)
  t.equal(out.headers.location, `${strict.issuer}/session/end/success`)
  const signedOut = await browser.get(String(out.headers.location))
  t.match(signedOut.body, '<h1 id="signed-out">You are signed out</h1>')
  t.match(strict.endSessionCalls(), [{ method: 'GET', state: undefined, postLogoutRedirectUri: AFTER_LOGOUT, idTokenHint: undefined }])

  const lenient = await provider(t, { requireLogoutState: false })
  const other = new BrowserClient()
  await signIn(lenient, other)
  const lenientPage = await other.get(endSessionUrl(lenient, { client_id: lenient.clientId, post_logout_redirect_uri: AFTER_LOGOUT }), { follow: false })
  const back = await other.submit(lenientPage, {}, { follow: false })
  t.equal(back.headers.location, AFTER_LOGOUT)
})

scenario('end-session refuses a post_logout_redirect_uri the client did not register', async (t) => {
  const op = await provider(t, { clients: [{ clientId: DEFAULT_CLIENT_ID, secret: DEFAULT_CLIENT_SECRET, postLogoutRedirectUris: ['http://127.0.0.1:9/*'] }] })
  const browser = new BrowserClient()
  await signIn(op, browser)
  const refused = await browser.get(endSessionUrl(op, { client_id: op.clientId, post_logout_redirect_uri: 'https://evil.example.test/', state: 's' }), { follow: false })
  t.equal(refused.status, 400)
  t.match(refused.body, 'post_logout_redirect_uri not registered')
  t.match(op.endSessionCalls(), [{ state: 's', postLogoutRedirectUri: 'https://evil.example.test/', status: 400 }])
})

scenario('endSession: false publishes no end_session_endpoint and serves none', async (t) => {
  const op = await provider(t, { endSession: false })
  const discovery = await (await fetch(op.discoveryUrl)).json() as Record<string, unknown>
  t.notOk('end_session_endpoint' in discovery)
  t.equal(op.endpoints.endSession, undefined)
  t.equal((await fetch(`${op.issuer}/session/end`)).status, 404)
  t.equal(discovery['backchannel_logout_supported'], true, 'back-channel logout stays')
  t.same(op.endSessionCalls(), [])
})

scenario('back-channel logout: logoutUser posts a logout token whose sid is the ID token\'s, and ends the grant', async (t) => {
  const receiver = await startLogoutReceiver(t)
  const op = await provider(t, { clients: [{ clientId: DEFAULT_CLIENT_ID, secret: DEFAULT_CLIENT_SECRET, backchannelLogoutUri: receiver.url }] })
  const carol = await signIn(op)
  const dave = await signIn(op, new BrowserClient(), 'dave')
  const idToken = decodeJwt(carol.id_token)
  t.notOk('sid' in decodeJwt(carol.access_token), 'the sid is in the ID token only')

  const deliveries = await op.logoutUser('carol')
  t.equal(deliveries.length, 1)
  t.match(deliveries[0], { clientId: DEFAULT_CLIENT_ID, uri: receiver.url, sub: idToken.sub, sid: idToken['sid'], status: 200 })
  t.same(op.backchannelLogouts(), deliveries)
  t.equal(receiver.received().length, 1)
  t.equal(receiver.received()[0]?.contentType, 'application/x-www-form-urlencoded')
  const logoutToken = receiver.received()[0]?.body.get('logout_token') ?? ''
  t.equal(logoutToken, deliveries[0]?.logoutToken)

  // OIDC Back-Channel Logout 1.0 §2.6: what the client checks.
  const { payload, protectedHeader } = await jwtVerify(logoutToken, jwksOf(op), { issuer: op.issuer, audience: DEFAULT_CLIENT_ID, typ: 'logout+jwt' })
  t.equal(protectedHeader.kid, op.signingKey().kid)
  t.equal(payload['sid'], idToken['sid'])
  t.equal(payload.sub, idToken.sub)
  t.same(payload['events'], { 'http://schemas.openid.net/event/backchannel-logout': {} })
  t.type(payload.jti, 'string')
  t.type(payload.iat, 'number')
  t.equal((payload.exp ?? 0) - (payload.iat ?? 0), 120)
  t.notOk('nonce' in payload, '§2.4: a logout token has no nonce')

  t.equal((await refresh(op, carol.refresh_token)).body['error'], 'invalid_grant', 'carol\'s grant ended')
  t.equal((await userinfo(op, carol.access_token)).status, 401, 'carol\'s access token is no longer good at userinfo')
  t.equal((await refresh(op, dave.refresh_token)).status, 200, 'dave is untouched')
  t.same(await op.logoutUser('carol'), [], 'nothing left to end')
})

scenario('back-channel logout: RP-initiated logout notifies the client too, and a failing client is recorded', async (t) => {
  const receiver = await startLogoutReceiver(t, 500)
  const op = await provider(t, { clients: [{ clientId: DEFAULT_CLIENT_ID, secret: DEFAULT_CLIENT_SECRET, backchannelLogoutUri: receiver.url }] })
  const browser = new BrowserClient()
  const tokens = await signIn(op, browser)
  const page = await browser.get(endSessionUrl(op, { id_token_hint: tokens.id_token, post_logout_redirect_uri: AFTER_LOGOUT, state: 'x' }), { follow: false })
  const out = await browser.submit(page, {}, { follow: false })
  t.equal(out.headers.location, `${AFTER_LOGOUT}?state=x`)
  const deliveries = op.backchannelLogouts()
  t.equal(deliveries.length, 1)
  t.match(deliveries[0], { sid: decodeJwt(tokens.id_token)['sid'], status: 500 })
  t.equal(receiver.received().length, 1)
})

scenario('an unreachable back-channel URI is recorded as an error, not thrown', async (t) => {
  const op = await provider(t, { clients: [{ clientId: DEFAULT_CLIENT_ID, secret: DEFAULT_CLIENT_SECRET, backchannelLogoutUri: 'http://127.0.0.1:9/backchannel' }] })
  await signIn(op)
  const [delivery] = await op.logoutUser('carol')
  t.equal(delivery?.status, undefined)
  t.type(delivery?.error, 'string')
})

scenario('minted tokens: signed with the current key; expired, wrong typ and wrong aud fail as a verifier would say', async (t) => {
  const op = await provider(t)
  const jwks = jwksOf(op)
  const verify = async (token: string): Promise<unknown> => await jwtVerify(token, jwks, { issuer: op.issuer, audience: op.resource, typ: 'at+jwt' })
  const good = await op.mintAccessToken({ scope: 'openid groups' })
  const { payload, protectedHeader } = await jwtVerify(good, jwks, { issuer: op.issuer, audience: op.resource, typ: 'at+jwt' })
  t.same(protectedHeader, { alg: 'RS256', kid: op.signingKey().kid, typ: 'at+jwt' })
  t.match(payload, { sub: op.user('carol').sub, client_id: DEFAULT_CLIENT_ID, scope: 'openid groups' })
  t.same(Object.keys(payload).sort(), ['aud', 'client_id', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub'])
  await t.rejects(verify(await op.mintAccessToken({}, { expired: true })), { code: 'ERR_JWT_EXPIRED' })
  await t.rejects(verify(await op.mintAccessToken({}, { typ: 'JWT' })), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'typ' })
  await t.rejects(verify(await op.mintAccessToken({}, { audience: 'https://other.example.test' })), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' })
  t.equal(decodeJwt(await op.mintAccessToken({ client_id: undefined, azp: 'app' }))['client_id'], undefined, 'overrides remove and add claims')
  const id = decodeJwt(await op.mintIdToken({}, { username: 'dave', sid: 'sid-1' }))
  t.match(id, { aud: DEFAULT_CLIENT_ID, sid: 'sid-1', preferred_username: 'dave', email: 'dave@example.test' })
  const logout = await op.mintLogoutToken({}, { sid: 'sid-1' })
  t.equal(decodeProtectedHeader(logout).typ, 'logout+jwt')
  t.match(decodeJwt(logout), { sid: 'sid-1', sub: op.user('carol').sub, events: { 'http://schemas.openid.net/event/backchannel-logout': {} } })
})

scenario('rotateKeys: new tokens carry the new kid, old ones still verify unless keepOld is false; sessions survive', async (t) => {
  const op = await provider(t)
  const tokens = await signIn(op)
  const before = op.signingKey().kid
  const next = await op.rotateKeys()
  t.not(next.kid, before)
  const published = (await (await fetch(op.endpoints.jwks)).json() as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid)
  t.same(published, [next.kid, before])
  await jwtVerify(tokens.access_token, jwksOf(op), { issuer: op.issuer, typ: 'at+jwt' })
  const refreshed = await refresh(op, tokens.refresh_token)
  t.equal(refreshed.status, 200, 'the grant survived the new Provider')
  t.equal(decodeProtectedHeader(String(refreshed.body['access_token'])).kid, next.kid)
  t.equal(decodeProtectedHeader(String(refreshed.body['id_token'])).kid, next.kid)

  const last = await op.rotateKeys({ keepOld: false })
  t.same(op.publishedKeys().map((k) => k.kid), [last.kid])
  await t.rejects(jwtVerify(tokens.access_token, jwksOf(op)), { code: 'ERR_JWKS_NO_MATCHING_KEY' })
})

scenario('counts and token requests can be reset', async (t) => {
  const op = await provider(t)
  await signIn(op)
  t.equal(op.countOf('/token'), 1)
  t.equal(op.countOf('/auth'), 1)
  op.resetCounts()
  t.same(op.counts(), {})
  t.same(op.tokenRequests(), [])
})

scenario('headless Chromium fills the sign-in form and follows the self-submitting logout page', async (t) => {
  if (requireProgram(t, 'chromium') === null) return
  const op = await provider(t)
  const app = await startEchoUpstream()
  t.teardown(() => app.close())
  const appUrl = app.url

  const chromium = await launchChromium(t)
  const page = await chromium.newPage()
  const req = authorizationRequest(op, { redirect_uri: `${appUrl}/callback` })
  await page.goto(req.url.href)
  await page.fill('#username', 'carol')
  await page.fill('#password', 'carol-password')
  await Promise.all([page.waitForURL((url) => url.href.startsWith(`${appUrl}/callback`)), page.click('#login')])
  const callback = new URL(page.url())
  t.equal(callback.searchParams.get('state'), req.state)
  const exchange = await tokenRequest(op, withClientSecret(op, {
    grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: `${appUrl}/callback`, code_verifier: req.verifier
  }))
  t.equal(exchange.status, 200)

  await Promise.all([
    page.waitForURL((url) => url.href.startsWith(`${appUrl}/bye`)),
    page.goto(endSessionUrl(op, { id_token_hint: String(exchange.body['id_token']), post_logout_redirect_uri: `${appUrl}/bye`, state: 'from-chromium' }))
  ])
  t.equal(new URL(page.url()).searchParams.get('state'), 'from-chromium')
  t.match(op.endSessionCalls(), [{ state: 'from-chromium', postLogoutRedirectUri: `${appUrl}/bye` }])
})
