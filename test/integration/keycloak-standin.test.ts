import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'
import t from 'tap'
import {
  DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, generateSigningKey, standinFor
} from '../fixtures/keycloak-standin.ts'
import type { KeycloakStandin } from '../fixtures/keycloak-standin.ts'

/** What the helpers need from a (sub)test: somewhere to register cleanup. */
type Test = Pick<typeof t, 'teardown'>

const standin = standinFor

/** A fresh remote key set, as a client that has never cached `/certs` would build. */
function certsOf (kc: KeycloakStandin): ReturnType<typeof createRemoteJWKSet> {
  return createRemoteJWKSet(new URL(kc.endpoints.certs))
}

interface Received {
  method: string | undefined
  contentType: string | undefined
  body: URLSearchParams
}

/** A client's back-channel logout endpoint: records each POST and answers 200. */
async function startLogoutReceiver (t: Test): Promise<{ url: string, received: Received[], next: () => Promise<Received> }> {
  const received: Received[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => { body += chunk })
    req.on('end', () => {
      received.push({ method: req.method, contentType: req.headers['content-type'], body: new URLSearchParams(body) })
      server.emit('received')
      res.writeHead(200).end()
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/backchannel-logout`,
    received,
    next: async () => {
      if (received.length === 0) await once(server, 'received')
      const first = received[0]
      if (first === undefined) throw new Error('nothing received')
      return first
    }
  }
}

/**
 * A browser reduced to what the code flow needs: it follows no redirect by itself and keeps
 * cookies by name (paths ignored: every cookie the stand-in sets is harmless to send anywhere).
 */
class CookieClient {
  readonly #jar = new Map<string, string>()

  async request (url: string, init: { method?: string, form?: Record<string, string> } = {}): Promise<Response> {
    const headers: Record<string, string> = {}
    if (this.#jar.size > 0) headers['cookie'] = [...this.#jar].map(([name, value]) => `${name}=${value}`).join('; ')
    if (init.form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
    const response = await fetch(url, {
      method: init.method ?? 'GET',
      headers,
      redirect: 'manual',
      ...(init.form !== undefined ? { body: new URLSearchParams(init.form) } : {})
    })
    for (const cookie of response.headers.getSetCookie()) this.#keep(cookie)
    return response
  }

  #keep (setCookie: string): void {
    const [pair = ''] = setCookie.split(';')
    const eq = pair.indexOf('=')
    const name = pair.slice(0, eq).trim()
    const value = pair.slice(eq + 1).trim()
    const expired = /expires=Thu, 01 Jan 1970/i.test(setCookie) || /max-age=0/i.test(setCookie)
    if (expired || value === '') this.#jar.delete(name)
    else this.#jar.set(name, value)
  }
}

function locationOf (response: Response, base: string): string {
  const location = response.headers.get('location')
  if (location === null) throw new Error(`expected a redirect, got ${response.status}`)
  return new URL(location, base).href
}

interface CodeFlowResult {
  callback: URL
  verifier: string
  redirectUri: string
  browser: CookieClient
}

/** Authorization request → login form → resume → redirect back with a code, as a browser would. */
async function loginWithCodeFlow (kc: KeycloakStandin, username: string, password: string): Promise<CodeFlowResult> {
  const browser = new CookieClient()
  const verifier = randomBytes(32).toString('base64url')
  const redirectUri = 'http://127.0.0.1:9/callback'
  const authorize = new URL(kc.endpoints.authorization)
  authorize.search = new URLSearchParams({
    response_type: 'code',
    client_id: kc.clientId,
    redirect_uri: redirectUri,
    scope: 'openid',
    state: 'state-1',
    nonce: 'nonce-1',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256'
  }).toString()

  const toLogin = await browser.request(authorize.href)
  const loginUrl = locationOf(toLogin, authorize.href)
  const form = await (await browser.request(loginUrl)).text()
  const action = /<form id="kc-form-login" action="([^"]+)"/.exec(form)?.[1]
  if (action === undefined) throw new Error('no login form')
  const toResume = await browser.request(new URL(action, loginUrl).href, { method: 'POST', form: { username, password } })
  const resumeUrl = locationOf(toResume, loginUrl)
  const toCallback = await browser.request(resumeUrl)
  return { callback: new URL(locationOf(toCallback, resumeUrl)), verifier, redirectUri, browser }
}

t.test('discovery at the Keycloak path lists the Keycloak endpoint paths', async (t) => {
  const kc = await standin(t)

  const response = await fetch(`${kc.baseUrl}/realms/test/.well-known/openid-configuration`)
  const doc = await response.json() as Record<string, unknown>

  const realm = `${kc.baseUrl}/realms/test`
  t.equal(response.status, 200)
  t.equal(kc.issuer, realm)
  t.equal(doc['issuer'], realm)
  t.equal(doc['authorization_endpoint'], `${realm}/protocol/openid-connect/auth`)
  t.equal(doc['token_endpoint'], `${realm}/protocol/openid-connect/token`)
  t.equal(doc['jwks_uri'], `${realm}/protocol/openid-connect/certs`)
  t.equal(doc['userinfo_endpoint'], `${realm}/protocol/openid-connect/userinfo`)
  t.equal(doc['end_session_endpoint'], `${realm}/protocol/openid-connect/logout`)
  t.equal(doc['introspection_endpoint'], `${realm}/protocol/openid-connect/token/introspect`)
  t.equal(doc['revocation_endpoint'], `${realm}/protocol/openid-connect/revoke`)
  t.equal(doc['backchannel_logout_supported'], true)
  for (const grant of ['authorization_code', 'refresh_token', 'client_credentials', 'password']) {
    t.ok((doc['grant_types_supported'] as string[]).includes(grant), `grant ${grant} is listed`)
  }
  t.equal(kc.countOf('/.well-known/openid-configuration'), 1)
})

t.test('a public issuer base changes iss and the front-channel endpoints, not the back channel', async (t) => {
  const kc = await standin(t, { issuerBase: 'https://sso.example.test/', realm: 'corp' })

  const doc = await (await fetch(kc.endpoints.discovery)).json() as Record<string, unknown>
  const tokens = await kc.passwordGrant('alice', 'alice-password')

  t.equal(kc.issuer, 'https://sso.example.test/realms/corp')
  t.equal(doc['issuer'], 'https://sso.example.test/realms/corp')
  t.equal(doc['authorization_endpoint'], 'https://sso.example.test/realms/corp/protocol/openid-connect/auth')
  t.equal(doc['token_endpoint'], `${kc.baseUrl}/realms/corp/protocol/openid-connect/token`)
  t.equal(decodeJwt(tokens.access_token).iss, 'https://sso.example.test/realms/corp')
})

t.test('an unknown realm is 404', async (t) => {
  const kc = await standin(t)

  const response = await fetch(`${kc.baseUrl}/realms/other/.well-known/openid-configuration`)

  t.equal(response.status, 404)
  t.same(await response.json(), { error: 'Realm does not exist' })
})

t.test('the password grant issues a Keycloak-shaped access token that verifies against /certs', async (t) => {
  const kc = await standin(t)
  const alice = kc.user('alice')

  const tokens = await kc.passwordGrant('alice', 'alice-password')
  const { payload, protectedHeader } = await jwtVerify(tokens.access_token, certsOf(kc), {
    issuer: kc.issuer, audience: DEFAULT_CLIENT_ID, typ: 'JWT'
  })

  t.equal(protectedHeader.alg, 'RS256')
  t.equal(protectedHeader.kid, kc.signingKey().kid)
  t.match(payload, {
    iss: kc.issuer,
    sub: alice.sub,
    aud: 'gatehouse',
    azp: 'gatehouse',
    typ: 'Bearer',
    scope: 'openid profile email',
    preferred_username: 'alice',
    email: 'alice@example.test',
    email_verified: true,
    name: 'Alice Admin',
    given_name: 'Alice',
    family_name: 'Admin',
    resource_access: { gatehouse: { roles: ['operator'] } },
    groups: ['/staff/admins']
  })
  t.same((payload['realm_access'] as { roles: string[] }).roles.sort(),
    ['admin', 'default-roles-test', 'offline_access', 'uma_authorization'])
  t.type(payload.jti, 'string')
  t.type(payload['sid'], 'string')
  t.equal((payload.exp ?? 0) - (payload.iat ?? 0), 300)
  t.notOk('client_id' in payload, 'user tokens carry azp, not client_id')

  t.match(tokens, {
    token_type: 'Bearer', expires_in: 300, refresh_expires_in: 1800, 'not-before-policy': 0,
    session_state: payload['sid'], scope: 'openid profile email'
  })
  t.type(tokens.refresh_token, 'string')
  const idToken = await jwtVerify(tokens.id_token ?? '', certsOf(kc), { issuer: kc.issuer, audience: 'gatehouse' })
  t.match(idToken.payload, { typ: 'ID', sid: payload['sid'], sub: alice.sub, preferred_username: 'alice', email: 'alice@example.test' })
  t.equal(kc.grantCount('password'), 1)
  t.same(kc.serverErrors(), [])
})

t.test('client_secret_post authenticates as well as client_secret_basic', async (t) => {
  const kc = await standin(t)

  const tokens = await kc.passwordGrant('bob', 'bob-password', { auth: 'post', scope: 'profile' })

  const claims = decodeJwt(tokens.access_token)
  t.equal(claims['preferred_username'], 'bob')
  t.equal(claims['scope'], 'profile email')
  t.equal(tokens.id_token, undefined, 'no openid scope, no ID token')
})

t.test('a public client authenticates by client_id alone', async (t) => {
  const kc = await standin(t, { clients: [{ clientId: 'cli' }] })

  const tokens = await kc.passwordGrant('alice', 'alice-password')
  const withSecret = await kc.tokenRequest(
    { grant_type: 'password', username: 'alice', password: 'alice-password' }, { clientSecret: 'made-up' }
  )

  t.equal(kc.clientSecret, undefined)
  // alice holds a gatehouse client role, so Keycloak's audience resolve names gatehouse.
  t.match(decodeJwt(tokens.access_token), { azp: 'cli', aud: 'gatehouse' })
  t.equal(withSecret.status, 401, 'a public client cannot authenticate with a secret')
})

// Keycloak 26.7 answers 400 here (test/keycloak/sync.ts checks it against the real server).
t.test('a wrong password is 400 invalid_grant "Invalid user credentials"', async (t) => {
  const kc = await standin(t)

  const wrongPassword = await kc.tokenRequest({ grant_type: 'password', username: 'alice', password: 'nope', scope: 'openid' })
  const unknownUser = await kc.tokenRequest({ grant_type: 'password', username: 'mallory', password: 'x' })

  t.equal(wrongPassword.status, 400)
  t.same(wrongPassword.body, { error: 'invalid_grant', error_description: 'Invalid user credentials' })
  t.equal(unknownUser.status, 400)
  t.same(unknownUser.body, { error: 'invalid_grant', error_description: 'Invalid user credentials' })
  t.match(kc.grants(), [{ grantType: 'password', status: 400, error: 'invalid_grant' }, { status: 400 }])
})

t.test('a disabled user is 400 invalid_grant "Account disabled"', async (t) => {
  const kc = await standin(t, { users: [{ username: 'carol', password: 'carol-password', enabled: false }] })

  const result = await kc.tokenRequest({ grant_type: 'password', username: 'carol', password: 'carol-password' })

  t.equal(result.status, 400)
  t.same(result.body, { error: 'invalid_grant', error_description: 'Account disabled' })
})

t.test('a client without direct access grants is refused like Keycloak refuses it', async (t) => {
  const kc = await standin(t, { clients: [{ clientId: 'web', secret: 's3cret', directAccessGrants: false }] })

  const result = await kc.tokenRequest({ grant_type: 'password', username: 'alice', password: 'alice-password' })

  t.equal(result.status, 400)
  t.same(result.body, { error: 'unauthorized_client', error_description: 'Client not allowed for direct access grants' })
})

// As Keycloak 26.7 answers: 401 without a challenge, unauthorized_client for a known client.
t.test('a wrong client secret is 401 unauthorized_client; an unknown client 401 invalid_client', async (t) => {
  const kc = await standin(t)

  const result = await kc.tokenRequest(
    { grant_type: 'password', username: 'alice', password: 'alice-password' }, { clientSecret: 'wrong' }
  )
  const unknown = await kc.tokenRequest({ grant_type: 'client_credentials' }, { clientId: 'nosuch', clientSecret: 'x' })

  t.equal(result.status, 401)
  t.same(result.body, { error: 'unauthorized_client', error_description: 'Invalid client or Invalid client credentials' })
  t.equal(unknown.status, 401)
  t.same(unknown.body, { error: 'invalid_client', error_description: 'Invalid client or Invalid client credentials' })
})

t.test('refresh works, and a rotated refresh token cannot be reused', async (t) => {
  const kc = await standin(t)
  const first = await kc.passwordGrant('alice', 'alice-password')

  const refreshed = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '' })
  const reused = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '' })

  t.equal(refreshed.status, 200)
  t.not(refreshed.body['refresh_token'], first.refresh_token, 'a new refresh token comes back')
  t.equal(decodeJwt(String(refreshed.body['access_token']))['sid'], decodeJwt(first.access_token)['sid'], 'same session')
  t.equal(reused.status, 400)
  t.same(reused.body, { error: 'invalid_grant', error_description: 'Maximum allowed refresh token reuse exceeded' })
  t.equal(kc.grantCount('refresh_token'), 2)
})

t.test('without rotation a refresh token can be used again', async (t) => {
  const kc = await standin(t, { rotateRefreshTokens: false })
  const first = await kc.passwordGrant('alice', 'alice-password')

  const once1 = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '' })
  const once2 = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '' })

  t.equal(once1.status, 200)
  t.equal(once2.status, 200)
})

t.test('an unknown refresh token is invalid_grant', async (t) => {
  const kc = await standin(t)

  const result = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: 'not-a-token' })

  t.equal(result.status, 400)
  t.equal(result.body['error'], 'invalid_grant')
})

t.test('client_credentials issues a service-account token', async (t) => {
  const kc = await standin(t)

  const result = await kc.tokenRequest({ grant_type: 'client_credentials' })
  const token = String(result.body['access_token'])
  // The service account holds realm-management roles: Keycloak 26.7 puts that client in `aud`.
  const { payload } = await jwtVerify(token, certsOf(kc), { issuer: kc.issuer, audience: 'realm-management' })

  t.equal(result.status, 200)
  t.equal(result.body['refresh_token'], undefined, 'Keycloak issues no refresh token here by default')
  t.match(payload, {
    preferred_username: 'service-account-gatehouse', azp: 'gatehouse', client_id: 'gatehouse', typ: 'Bearer'
  })
  t.equal(kc.grantCount('client_credentials'), 1)
})

t.test('the code flow with PKCE completes with a plain fetch client and yields an ID token with sid', async (t) => {
  const kc = await standin(t)

  const { callback, verifier, redirectUri } = await loginWithCodeFlow(kc, 'alice', 'alice-password')
  t.equal(callback.origin + callback.pathname, redirectUri)
  t.equal(callback.searchParams.get('state'), 'state-1')
  t.equal(callback.searchParams.get('iss'), kc.issuer)

  const tokens = await kc.tokenRequest({
    grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: redirectUri, code_verifier: verifier
  })
  t.equal(tokens.status, 200)
  const idToken = await jwtVerify(String(tokens.body['id_token']), certsOf(kc), { issuer: kc.issuer, audience: kc.clientId })
  const access = decodeJwt(String(tokens.body['access_token']))

  t.match(idToken.payload, { sub: kc.user('alice').sub, nonce: 'nonce-1', typ: 'ID', azp: 'gatehouse', preferred_username: 'alice' })
  t.type(idToken.payload['sid'], 'string')
  t.equal(access['sid'], idToken.payload['sid'], 'access and ID token name the same session')
  t.equal(tokens.body['session_state'], idToken.payload['sid'])
  t.equal(kc.grantCount('authorization_code'), 1)
})

t.test('the code flow refuses a wrong code_verifier', async (t) => {
  const kc = await standin(t)
  const { callback, redirectUri } = await loginWithCodeFlow(kc, 'bob', 'bob-password')

  const result = await kc.tokenRequest({
    grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: redirectUri, code_verifier: 'x'.repeat(43)
  })

  t.equal(result.status, 400)
  t.equal(result.body['error'], 'invalid_grant')
})

t.test('the login form shows Keycloak\'s error for a wrong password', async (t) => {
  const kc = await standin(t)
  const browser = new CookieClient()
  const authorize = `${kc.endpoints.authorization}?response_type=code&client_id=gatehouse&redirect_uri=${encodeURIComponent('http://127.0.0.1:9/cb')}&scope=openid`
  const loginUrl = locationOf(await browser.request(authorize), authorize)

  const page = await browser.request(loginUrl, { method: 'POST', form: { username: 'alice', password: 'wrong' } })

  t.equal(page.status, 200)
  t.match(await page.text(), /<span id="input-error"[^>]*>Invalid username or password\.<\/span>/)
})

t.test('key rotation publishes the new kid, and tokens signed before still verify', async (t) => {
  const kc = await standin(t)
  const before = await kc.passwordGrant('alice', 'alice-password')
  const oldKid = kc.signingKey().kid

  const newKey = await kc.rotateKeys()
  const after = await kc.passwordGrant('alice', 'alice-password')
  const certs = await (await fetch(kc.endpoints.certs)).json() as { keys: Array<{ kid: string, use: string }> }

  t.not(newKey.kid, oldKid)
  t.same(certs.keys.filter((k) => k.use === 'sig').map((k) => k.kid), [newKey.kid, oldKid])
  t.equal(decodeProtectedHeader(after.access_token).kid, newKey.kid, 'new tokens use the new key')
  await t.resolves(jwtVerify(before.access_token, certsOf(kc), { issuer: kc.issuer }), 'old token still verifies')
  await t.resolves(jwtVerify(after.access_token, certsOf(kc), { issuer: kc.issuer }))
  const refreshed = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: before.refresh_token ?? '' })
  t.equal(refreshed.status, 200, 'refresh tokens survive the rotation')
})

t.test('rotating with keepOld: false unpublishes the old kid', async (t) => {
  const kc = await standin(t)
  const before = await kc.passwordGrant('alice', 'alice-password')
  const oldKid = kc.signingKey().kid

  const newKey = await kc.rotateKeys({ keepOld: false })
  const certs = await (await fetch(kc.endpoints.certs)).json() as { keys: Array<{ kid: string, use: string }> }

  t.same(certs.keys.filter((k) => k.use === 'sig').map((k) => k.kid), [newKey.kid])
  t.notOk(certs.keys.some((k) => k.kid === oldKid))
  await t.rejects(jwtVerify(before.access_token, certsOf(kc), { issuer: kc.issuer }), { code: 'ERR_JWKS_NO_MATCHING_KEY' })
})

t.test('/certs also publishes an encryption key, as Keycloak does', async (t) => {
  const kc = await standin(t)

  const certs = await (await fetch(kc.endpoints.certs)).json() as { keys: Array<Record<string, unknown>> }

  t.match(certs.keys, [{ use: 'sig', alg: 'RS256', kty: 'RSA' }, { use: 'enc', alg: 'RSA-OAEP', kty: 'RSA' }])
  t.notOk(certs.keys.some((k) => 'd' in k), 'no private parts')
})

t.test('minted access tokens verify, and each override breaks them as intended', async (t) => {
  const kc = await standin(t)
  const certs = certsOf(kc)
  const expect = { issuer: kc.issuer, audience: 'gatehouse' }

  const good = await kc.mintAccessToken()
  await t.resolves(jwtVerify(good, certs, expect))
  t.match(decodeJwt(good), { preferred_username: 'alice', typ: 'Bearer', azp: 'gatehouse' })

  await t.rejects(jwtVerify(await kc.mintAccessToken({ iss: 'https://evil.example' }), certs, expect), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'iss' })
  await t.rejects(jwtVerify(await kc.mintAccessToken({ exp: 1 }), certs, expect), { code: 'ERR_JWT_EXPIRED' })
  await t.rejects(jwtVerify(await kc.mintAccessToken({ aud: 'other' }), certs, expect), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' })
  t.notOk('sid' in decodeJwt(await kc.mintAccessToken({ sid: undefined })), 'undefined deletes a claim')

  const impostor = await generateSigningKey()
  const sameKid = await kc.mintAccessToken({}, { key: impostor.privateKey })
  t.equal(decodeProtectedHeader(sameKid).kid, kc.signingKey().kid)
  await t.rejects(jwtVerify(sameKid, certs, expect), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' })
  await t.rejects(jwtVerify(await kc.mintAccessToken({}, { key: impostor }), certs, expect), { code: 'ERR_JWKS_NO_MATCHING_KEY' })
  t.equal(decodeProtectedHeader(await kc.mintAccessToken({}, { header: { alg: 'none' } })).alg, 'none')
})

t.test('userinfo and introspection answer for a live token and refuse an ended session', async (t) => {
  const kc = await standin(t)
  const tokens = await kc.passwordGrant('bob', 'bob-password')
  const introspect = async (token: string): Promise<Record<string, unknown>> => {
    const response = await fetch(kc.endpoints.introspection, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`gatehouse:${DEFAULT_CLIENT_SECRET}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded'
      },
      body: new URLSearchParams({ token })
    })
    return await response.json() as Record<string, unknown>
  }

  const userinfo = await fetch(kc.endpoints.userinfo, { headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(userinfo.status, 200)
  t.match(await userinfo.json(), { sub: kc.user('bob').sub, preferred_username: 'bob', email: 'bob@example.test' })
  t.match(await introspect(tokens.access_token), { active: true, username: 'bob', client_id: 'gatehouse', token_type: 'Bearer' })
  t.match(await introspect(tokens.refresh_token ?? ''), { active: true, token_type: 'Refresh' })

  await kc.logoutUser('bob')

  t.same(await introspect(tokens.access_token), { active: false })
  t.same(await introspect(tokens.refresh_token ?? ''), { active: false })
  const after = await fetch(kc.endpoints.userinfo, { headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(after.status, 401)
  t.match(after.headers.get('www-authenticate'), /^Bearer realm="test", error="invalid_token"/)
})

t.test('logoutUser POSTs a well-formed logout token to the client back-channel', async (t) => {
  const receiver = await startLogoutReceiver(t)
  const kc = await standin(t, {
    clients: [{ clientId: 'gatehouse', secret: DEFAULT_CLIENT_SECRET, backchannelLogoutUri: receiver.url }]
  })
  const tokens = await kc.passwordGrant('alice', 'alice-password')
  const sid = decodeJwt(tokens.access_token)['sid']

  const deliveries = await kc.logoutUser('alice')
  const post = await receiver.next()

  t.match(deliveries, [{ clientId: 'gatehouse', uri: receiver.url, status: 200, sid }])
  t.equal(receiver.received.length, 1)
  t.equal(post.method, 'POST')
  t.equal(post.contentType, 'application/x-www-form-urlencoded')
  t.same([...post.body.keys()], ['logout_token'])
  const logoutToken = post.body.get('logout_token') ?? ''
  const { payload, protectedHeader } = await jwtVerify(logoutToken, certsOf(kc), {
    issuer: kc.issuer, audience: 'gatehouse', typ: 'logout+jwt'
  })
  t.equal(protectedHeader.kid, kc.signingKey().kid)
  t.match(payload, {
    sub: kc.user('alice').sub,
    sid,
    typ: 'Logout',
    events: { 'http://schemas.openid.net/event/backchannel-logout': {} }
  })
  t.equal((payload.exp ?? 0) - (payload.iat ?? 0), 120)
  t.type(payload.jti, 'string')
  t.notOk('nonce' in payload)

  const refresh = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token ?? '' })
  t.equal(refresh.status, 400, 'the session is over')
  t.same(kc.sessions('alice'), [])
})

t.test('RP-initiated logout with id_token_hint ends the session, tells the back channel and redirects', async (t) => {
  const receiver = await startLogoutReceiver(t)
  const kc = await standin(t, {
    clients: [{
      clientId: 'gatehouse', secret: DEFAULT_CLIENT_SECRET, redirectUris: ['http://127.0.0.1:9/*'], backchannelLogoutUri: receiver.url
    }]
  })
  const { callback, verifier, redirectUri, browser } = await loginWithCodeFlow(kc, 'alice', 'alice-password')
  const tokens = await kc.tokenRequest({
    grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: redirectUri, code_verifier: verifier
  })
  const idToken = String(tokens.body['id_token'])

  const logout = new URL(kc.endpoints.logout)
  logout.search = new URLSearchParams({
    id_token_hint: idToken, post_logout_redirect_uri: 'http://127.0.0.1:9/bye', state: 'st'
  }).toString()
  const response = await browser.request(logout.href)
  const post = await receiver.next()

  t.equal(response.status, 302)
  t.equal(response.headers.get('location'), 'http://127.0.0.1:9/bye?state=st')
  t.equal(decodeJwt(post.body.get('logout_token') ?? '')['sid'], decodeJwt(idToken)['sid'])
  const refresh = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: String(tokens.body['refresh_token']) })
  t.equal(refresh.status, 400)

  const again = new URL(kc.endpoints.authorization)
  again.search = new URLSearchParams({ response_type: 'code', client_id: 'gatehouse', redirect_uri: redirectUri, scope: 'openid' }).toString()
  const relogin = await browser.request(again.href)
  t.match(relogin.headers.get('location'), /\/login-actions\/authenticate\//, 'the browser session is gone too')
})

t.test('RP-initiated logout without id_token_hint asks first, then ends the browser session', async (t) => {
  const kc = await standin(t)
  const { callback, verifier, redirectUri, browser } = await loginWithCodeFlow(kc, 'bob', 'bob-password')
  const tokens = await kc.tokenRequest({
    grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: redirectUri, code_verifier: verifier
  })

  const confirm = await browser.request(`${kc.endpoints.logout}?client_id=gatehouse`)
  const page = await confirm.text()
  t.equal(confirm.status, 200)
  t.match(page, /<form id="kc-logout-form"/)
  t.equal(kc.sessions('bob').length, 1, 'nothing ended before confirming')

  const done = await browser.request(kc.endpoints.logout, { method: 'POST', form: { client_id: 'gatehouse', confirm: 'yes' } })

  t.equal(done.status, 200)
  t.match(await done.text(), /You are logged out/)
  t.same(kc.sessions('bob'), [])
  const refresh = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: String(tokens.body['refresh_token']) })
  t.equal(refresh.status, 400)
})

t.test('RP-initiated logout refuses an unregistered post_logout_redirect_uri', async (t) => {
  const kc = await standin(t, { clients: [{ clientId: 'gatehouse', secret: DEFAULT_CLIENT_SECRET, redirectUris: ['https://app.example/*'] }] })
  const idToken = await kc.mintIdToken()

  const logout = new URL(kc.endpoints.logout)
  logout.search = new URLSearchParams({ id_token_hint: idToken, post_logout_redirect_uri: 'https://evil.example/' }).toString()
  const response = await fetch(logout, { redirect: 'manual' })

  t.equal(response.status, 400)
  t.match(await response.text(), /Invalid redirect uri/)
})

t.test('counts and grants can be reset', async (t) => {
  const kc = await standin(t)
  await kc.passwordGrant('alice', 'alice-password')

  t.equal(kc.counts()['/realms/test/protocol/openid-connect/token'], 1)
  t.equal(kc.countOf('/token'), 1)
  kc.resetCounts()

  t.same(kc.counts(), {})
  t.same(kc.grants(), [])
})
