// Gatehouse in front of an app with a standards OpenID provider that is not Keycloak (issue
// 12): an issuer without /realms/, endpoints of its own found by discovery, RFC 9068 access
// tokens, the identity only in the ID token and userinfo, client_secret_post only.
import t from 'tap'
import { exportJWK, generateKeyPair } from 'jose'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { launchChromium } from '../fixtures/browser.ts'
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { genericProviderFor, type GenericProvider, type GenericProviderOptions } from '../fixtures/generic-provider.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { runInProcess } from '../fixtures/cli.ts'
import { freePort, modeOf } from '../fixtures/sessions.ts'
import { requireProgram } from '../fixtures/system-programs.ts'
import { manualClock } from '../fixtures/clock.ts'
import { startEchoUpstream, type EchoUpstream } from '../fixtures/upstream.ts'
import { SessionsRepository } from '../../src/store/sessions.ts'
import { join } from 'node:path'

interface Rig {
  op: GenericProvider
  /** Between Gatehouse and the provider's back channel, so outages can be staged. */
  fault: FaultProxy
  upstream: EchoUpstream
  settings: Record<string, unknown>
}

/** A provider, a fault proxy standing for its issuer on the back channel, an upstream, and the settings. */
async function rig (t: { teardown: (fn: () => unknown) => void }, options: GenericProviderOptions = {}, extra: Record<string, unknown> = {}): Promise<Rig> {
  const op = await genericProviderFor(t, options)
  const fault = await startFaultProxy({ target: op.baseUrl })
  t.teardown(() => fault.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const issuerPath = new URL(op.issuer).pathname
  const settings = {
    upstream: { url: upstream.url },
    keycloak: {
      issuer: op.issuer,
      // The back channel: the fault proxy stands for the issuer (server + its path).
      server: `${fault.url}${issuerPath}`,
      client_id: op.clientId,
      client_secret: op.clientSecret,
      client_auth_method: 'client_secret_post',
      timeout_ms: 800
    },
    tokens: { audiences: [op.resource] },
    claims: { userinfo: true },
    ...extra
  }
  return { op, fault, upstream, settings }
}

const signIn = async (op: GenericProvider, browser: BrowserClient, proxyUrl: string, username: string): Promise<void> => {
  const page = await browser.get(`${proxyUrl}/_gatehouse/login?rd=%2Fhello`)
  if (!page.url.startsWith(op.baseUrl)) throw new Error(`not sent to the provider: ${page.status} ${page.url}`)
  const done = await browser.submit(page, { username, password: `${username}-password` })
  if (done.status !== 200 || !done.url.startsWith(proxyUrl)) throw new Error(`login ended with ${done.status} at ${done.url}`)
}

/** A rig, Gatehouse in front of it, and a browser signed in as carol. */
async function signedInCarol (t: { teardown: (fn: () => unknown) => void, testdir: () => string }, options: GenericProviderOptions = {}) {
  const r = await rig(t, options)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), r.settings))
  await gatehouse.started
  const browser = new BrowserClient()
  await signIn(r.op, browser, gatehouse.proxyUrl, 'carol')
  return { ...r, gatehouse, browser }
}

/** Confirms Gatehouse's sign-out page; the answer is not followed. */
async function signOut (browser: BrowserClient, proxyUrl: string): Promise<Awaited<ReturnType<BrowserClient['submit']>>> {
  const confirm = await browser.get(`${proxyUrl}/_gatehouse/logout?rd=%2Fbye`)
  return await browser.submit(confirm, {}, { follow: false })
}

t.test('start-up: a generic provider, its endpoints from discovery moved onto the back channel', async (t) => {
  const { op, fault, settings } = await rig(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), settings))
  await gatehouse.started
  const status = (await gatehouse.app.status()).keycloak
  t.match(status.discovery, { issuer: op.issuer, issuer_matches: true, endpoints_from: 'discovery', server: `${fault.url}/oidc` })
  t.equal(gatehouse.app.keycloak.metadata.endpoints.authorization, op.endpoints.authorization, 'browsers go to the published endpoint')
  t.equal(gatehouse.app.keycloak.metadata.layout.onServer(op.endpoints.token, `${fault.url}/oidc`), `${fault.url}/oidc/token`)
  t.ok(gatehouse.app.keycloak.jwks.keyIds().length > 0, 'keys came over the back channel')
  t.ok(fault.connectionCount().total > 0, 'every call went through the back channel')
  t.match(gatehouse.log.text(), 'generic OpenID provider: the Admin API, the sync queue and password pushes are off')
})

t.test('bearer: RFC 9068 access tokens pass with client_id and the resource audience; an ID token never does', async (t) => {
  const { op, upstream, settings } = await rig(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), settings))
  await gatehouse.started
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
  const ok = await rawRequest(gatehouse.proxyUrl, '/hello', { headers: bearer(await op.mintAccessToken()) })
  t.equal(ok.status, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], op.user('carol').sub)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-mode'], 'token')
  const before = upstream.requests.length
  for (const [name, token] of [
    ['an ID token', await op.mintIdToken()],
    ['another resource for another client', await op.mintAccessToken({}, { audience: 'https://other.example.test', clientId: 'someone-else' })],
    ['typ JWT, not at+jwt', await op.mintAccessToken({}, { typ: 'JWT' })],
    ['expired', await op.mintAccessToken({}, { expired: true })]
  ] as const) {
    const res = await rawRequest(gatehouse.proxyUrl, '/hello', { headers: bearer(token) })
    t.equal(res.status, 401, name)
  }
  t.equal(upstream.requests.length, before, 'the app got none of them')
})

t.test('browser login (code flow, client_secret_post): the identity comes from the ID token and userinfo', async (t) => {
  const { op, upstream, settings } = await rig(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), settings))
  await gatehouse.started
  const browser = new BrowserClient()
  await signIn(op, browser, gatehouse.proxyUrl, 'carol')
  const seen = upstream.requests.at(-1)?.headers ?? {}
  t.equal(seen['x-auth-request-user'], op.user('carol').sub)
  t.equal(seen['x-auth-request-preferred-username'], 'carol', 'from the ID token: the access token has none')
  t.equal(seen['x-auth-request-email'], 'carol@example.test')
  t.equal(seen['x-auth-request-groups'], 'engineering', 'a flat groups claim')
  t.equal(seen['x-auth-request-mode'], 'keycloak')
  const session = new SessionsRepository(gatehouse.db).list({ username: 'carol' })[0]
  t.ok(session?.keycloakSid, 'the sid, from the ID token')
  const exchanges = op.tokenRequests()
  t.ok(exchanges.length > 0 && exchanges.every((r) => r.status === 200), 'every token request accepted: client_secret_post (the provider refuses Basic)')
})

t.test('claims.user: email puts the e-mail address in the user header', async (t) => {
  const { op, upstream, settings } = await rig(t, {}, { claims: { user: 'email', userinfo: true } })
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), settings))
  await gatehouse.started
  await signIn(op, new BrowserClient(), gatehouse.proxyUrl, 'carol')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], 'carol@example.test')
})

t.test('refresh: an expiring session is refreshed once, through the back channel, rotating the refresh token', async (t) => {
  const { op, upstream, settings } = await rig(t)
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), settings), { clock })
  await gatehouse.started
  const browser = new BrowserClient()
  await signIn(op, browser, gatehouse.proxyUrl, 'carol')
  const refreshes = (): number => op.tokenRequests().filter((r) => r.grantType === 'refresh_token' && r.status === 200).length
  clock.advance(301_000)
  const [a, b] = await Promise.all([browser.get(`${gatehouse.proxyUrl}/one`), browser.get(`${gatehouse.proxyUrl}/two`)])
  t.equal(a.status, 200)
  t.equal(b.status, 200)
  t.equal(refreshes(), 1, 'one refresh for two requests')
  clock.advance(301_000)
  t.equal(await modeOf(browser, gatehouse.proxyUrl, upstream), 'keycloak', 'the rotated refresh token works the next time')
  t.equal(refreshes(), 2)
})

t.test('RP logout sends state, and the provider sends the browser back', async (t) => {
  const { op, upstream, gatehouse, browser } = await signedInCarol(t)
  const out = await signOut(browser, gatehouse.proxyUrl)
  t.equal(out.status, 303)
  const endSession = new URL(out.headers.location as string)
  t.equal(endSession.origin + endSession.pathname, op.endpoints.endSession)
  const state = endSession.searchParams.get('state')
  t.ok(state !== null && state.length >= 20, 'a state')
  // The provider asks for a confirmation (its page submits itself with a script; here, by hand).
  const ask = await browser.get(endSession.href)
  const done = await browser.submit(ask, {}, { follow: false })
  const back = new URL(done.headers.location as string, done.url)
  t.equal(back.origin + back.pathname, `${gatehouse.proxyUrl}/bye`, 'sent back to the site')
  t.equal(back.searchParams.get('state'), state, 'with the state it was given')
  t.match(op.endSessionCalls().at(-1), { state })
  t.equal(await modeOf(browser, gatehouse.proxyUrl, upstream), 302, 'signed out')
})

t.test('no end-session endpoint: logout is local, and the page says so', async (t) => {
  const { upstream, gatehouse, browser } = await signedInCarol(t, { endSession: false })
  const out = await signOut(browser, gatehouse.proxyUrl)
  t.equal(out.status, 200)
  t.match(out.body, 'single sign-on session at the identity provider may still be open')
  t.equal(await modeOf(browser, gatehouse.proxyUrl, upstream), 302)
})

t.test('back-channel logout whose sid is only in the ID token ends the session', async (t) => {
  const port = await freePort()
  const { op, upstream, settings } = await rig(t, {
    clients: [{ clientId: 'app', secret: 'app-secret+/=', backchannelLogoutUri: `http://127.0.0.1:${port}/_gatehouse/backchannel-logout` }]
  })
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...settings, server: { port } }))
  await gatehouse.started
  const carol = new BrowserClient()
  const dave = new BrowserClient()
  await signIn(op, carol, gatehouse.proxyUrl, 'carol')
  await signIn(op, dave, gatehouse.proxyUrl, 'dave')
  const deliveries = await op.logoutUser('carol')
  t.equal(deliveries[0]?.status, 200, 'Gatehouse took the logout token')
  t.equal(await modeOf(carol, gatehouse.proxyUrl, upstream), 302, 'carol is out')
  t.equal(await modeOf(dave, gatehouse.proxyUrl, upstream), 'keycloak', 'dave is not')
})

t.test('a restart while the provider is unreachable: the stored discovery and JWKS serve', async (t) => {
  const { op, fault, upstream, settings } = await rig(t)
  const dir = t.testdir()
  const config = writeConfig(dir, settings)
  const first = await startGatehouse({ teardown: () => {} }, config)
  await first.started
  await first.stop()
  await fault.setMode('refuse')
  const gatehouse = await startGatehouse(t, config)
  await gatehouse.started
  t.match((await gatehouse.app.status()).keycloak.discovery, { endpoints_from: 'discovery', issuer: op.issuer }, 'discovery from the store')
  t.equal((await rawRequest(gatehouse.proxyUrl, '/hello', { headers: { authorization: `Bearer ${await op.mintAccessToken()}` } })).status, 200, 'tokens verify with the stored keys')
  t.equal(upstream.requests.length, 1)
  const login = await new BrowserClient().get(`${gatehouse.proxyUrl}/_gatehouse/login?rd=%2Fhello`)
  t.equal(new URL(login.url).pathname, '/_gatehouse/login', 'the local form, while the provider is away')
  t.match(login.body, 'Single sign-on is unavailable')
})

t.test('a first start with the provider unreachable: explicit endpoints serve until discovery can be read', async (t) => {
  const { op, fault, settings } = await rig(t)
  await fault.setMode('refuse')
  const kc = settings.keycloak as Record<string, unknown>
  const endpoints = { authorization: op.endpoints.authorization, token: op.endpoints.token, jwks: op.endpoints.jwks, userinfo: op.endpoints.userinfo, end_session: op.endpoints.endSession }
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...settings, keycloak: { ...kc, endpoints } }))
  await gatehouse.started
  t.equal((await gatehouse.app.status()).keycloak.discovery.endpoints_from, 'config')
  t.equal(gatehouse.app.keycloak.metadata.endpoints.authorization, op.endpoints.authorization)
  // The provider comes back: the configured JWKS is fetched through the back channel.
  await fault.setMode('pass')
  t.ok(await gatehouse.app.keycloak.jwks.refresh('manual'), 'keys from the configured jwks endpoint')
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: { authorization: `Bearer ${await op.mintAccessToken()}` } })).status, 200)
})

t.test('config validate names every Keycloak-only setting of a generic configuration by key path', async (t) => {
  const { settings } = await rig(t)
  const dir = t.testdir()
  // Written, and refused by the loader as serve would refuse it.
  t.throws(() => writeConfig(dir, { ...settings, keycloak: { ...(settings.keycloak as object), admin: { client_id: 'svc' } }, sync: { enabled: true } }), { code: 'ERR_CONFIG_INVALID' })
  const result = await runInProcess(['config', 'validate', '-c', join(dir, 'config.yaml')])
  t.equal(result.code, 2)
  t.match(result.stderr, 'keycloak.admin.client_id: expected nothing')
  t.match(result.stderr, 'sync.enabled: expected nothing')
  t.match(result.stderr, 'keycloak.provider is generic')
})

t.test('headless Chromium signs in through the generic provider\'s own login page', async (t) => {
  if (requireProgram(t, 'chromium') === null) return
  const { op, settings } = await rig(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), settings))
  await gatehouse.started
  const browser = await launchChromium(t)
  const page = await browser.newPage()
  await page.goto(`${gatehouse.proxyUrl}/hello`)
  t.ok(page.url().startsWith(op.baseUrl), 'on the provider')
  await page.fill('#username', 'carol')
  await page.fill('#password', 'carol-password')
  await Promise.all([page.waitForURL(`${gatehouse.proxyUrl}/hello`), page.click('#login')])
  t.equal(page.url(), `${gatehouse.proxyUrl}/hello`)
})

t.test('private_key_jwt: the client authenticates with a signed assertion, no secret', async (t) => {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const publicJwk = { ...await exportJWK(publicKey), kid: 'gatehouse-1', alg: 'ES256', use: 'sig' }
  const privateJwk = JSON.stringify({ ...await exportJWK(privateKey), kid: 'gatehouse-1', alg: 'ES256' })
  const { op, upstream, settings } = await rig(t, { clients: [{ clientId: 'app', secret: 'unused-secret-x', jwks: { keys: [publicJwk] } }] })
  const kc = settings.keycloak as Record<string, unknown>
  delete kc.client_secret
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...settings, keycloak: { ...kc, client_auth_method: 'private_key_jwt', client_private_key: privateJwk } }))
  await gatehouse.started
  await signIn(op, new BrowserClient(), gatehouse.proxyUrl, 'carol')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-preferred-username'], 'carol')
  t.ok(op.tokenRequests().some((r) => r.grantType === 'authorization_code' && r.status === 200), 'the code exchange was accepted')
  t.notMatch(gatehouse.log.text(), /BEGIN|"d":"/, 'the private key is never logged')
})

t.test('a client_auth_method the stored discovery excludes stops start-up with its key path', async (t) => {
  const { settings } = await rig(t)
  const dir = t.testdir()
  const first = await startGatehouse({ teardown: () => {} }, writeConfig(dir, settings))
  await first.started
  await first.stop()
  const kc = settings.keycloak as Record<string, unknown>
  await t.rejects(startGatehouse(t, writeConfig(dir, { ...settings, keycloak: { ...kc, client_auth_method: 'client_secret_basic' } })),
    { code: 'ERR_CONFIG_INVALID', message: /keycloak\.client_auth_method: expected one the provider supports \(client_secret_post\), received client_secret_basic/ })
})
