import * as client from 'openid-client'
import { compactVerify, errors as joseErrors, decodeJwt, importJWK, importPKCS8, type JWK } from 'jose'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import type { KeycloakClaims } from './claims.ts'
import type { KeycloakPool, KeycloakOperation } from './failover.ts'
import type { JwksManager } from './jwks.ts'
import type { ProviderMetadata } from './metadata.ts'
import type { ProviderEndpoints } from './provider.ts'
import { keycloakErrorOf, keycloakFetchBuffered } from './http.ts'

/** Tokens Keycloak issued, with what Gatehouse needs to know about them. */
export interface TokenSet {
  accessToken: string
  refreshToken: string | null
  idToken: string | null
  /** `exp` of the access token (ms). */
  accessExpiresAt: number
  /** When the refresh token expires, from `refresh_expires_in` (ms), or null. */
  refreshExpiresAt: number | null
  /** Claims of the access token (roles, groups, sid…): it is what the decision reads. Empty for an opaque token. */
  claims: KeycloakClaims
  /** Claims of the ID token (verified), or null when none came: names and e-mail for the session. */
  idClaims: Record<string, unknown> | null
  /** What the userinfo endpoint said (`claims.userinfo`), or null when it was not asked or did not answer. */
  userinfo: Record<string, unknown> | null
  /**
   * The provider's session id (`sid`), for back-channel logout: from the access token, else
   * from the ID token (OIDC Back-Channel Logout 1.0 §2.1 puts it in the ID token; Keycloak
   * puts it in both). Null when neither has one.
   */
  sid: string | null
}

/** How the client authenticates at the token endpoint (`keycloak.client_auth_method`). */
export interface ClientAuthentication {
  method: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt'
  /** For the secret methods; none: a public client. */
  secret?: string | undefined
  /** For private_key_jwt: a PKCS#8 PEM or a private JWK (JSON). */
  privateKey?: string | undefined
  /** For private_key_jwt: the key's `kid` when the key has none. */
  keyId?: string | undefined
}

/** Options of {@link OidcClient}. */
export interface OidcOptions {
  pool: KeycloakPool
  jwks: JwksManager
  /** The provider's endpoints (discovery, overrides, or Keycloak's layout). */
  metadata: ProviderMetadata
  issuer: string
  clientId: string
  auth: ClientAuthentication
  clock: Clock
  /** Tolerance on ID token times, in seconds. */
  clockSkewSeconds: number
  /** Where a change of {@link ClientAuthState} is logged (an error when the provider refuses the credentials). */
  log?: Logger
  /** Ask userinfo after each user grant (`claims.userinfo`). Default is false. */
  userinfo?: boolean
}

/** Whether Keycloak accepts this client's credentials, as the latest token request showed. */
export interface ClientAuthState {
  state: 'unknown' | 'ok' | 'failed'
  /** Keycloak's answer when it refused them (`invalid_client`…), else null. */
  error: string | null
  /** Since when (ms), or null before the first token request. */
  since: number | null
}

/**
 * Whether a Keycloak error means it refused the client's own credentials: a missing or wrong
 * `client_secret`, or an unknown client. That is a misconfiguration, not a wrong password:
 * RFC 6749 §5.2 names it `invalid_client`; Keycloak answers `unauthorized_client` with a 401
 * for it (and with a 400 for a client that may not use a grant, which is not this).
 */
export function clientAuthRefused (err: unknown): err is KeycloakRejected {
  return err instanceof KeycloakRejected && (err.oauthError === 'invalid_client' || (err.oauthError === 'unauthorized_client' && err.status === 401))
}

/**
 * The provider's OIDC endpoints through openid-client, every request through the server pool:
 * the browser is sent to the public authorization and end-session endpoints; the code
 * exchange, the password grant, refreshes and userinfo go to the back channel of whichever
 * server the pool picks (openid-client's `customFetch` moves the request onto it), under the
 * pool's deadline and breakers. The endpoints come from discovery ({@link ProviderMetadata});
 * openid-client's configuration is rebuilt whenever they change. Failures come out as
 * {@link KeycloakUnavailable} or {@link KeycloakRejected}.
 */
export class OidcClient {
  readonly #options: OidcOptions
  #config: { endpoints: ProviderEndpoints, configuration: client.Configuration } | null = null
  #clientAuth: ClientAuthState = { state: 'unknown', error: null, since: null }
  #auth: Promise<client.ClientAuth> | null = null

  constructor (options: OidcOptions) {
    this.#options = options
  }

  /**
   * Whether the endpoint `which` is known (from discovery, stored or fetched, or configured),
   * reading discovery first when it is not. Throws {@link KeycloakUnavailable} when it cannot.
   */
  async ensure (which: 'authorization' | 'token' | 'userinfo'): Promise<void> {
    await this.#options.metadata.require(this.#options.pool, which)
  }

  /** Whether the provider has an end-session endpoint (RP-initiated logout). */
  get canEndSession (): boolean {
    return this.#options.metadata.endpoints.endSession !== null
  }

  /** The public authorization URL a browser is sent to (code flow with PKCE S256, state and nonce). */
  async authorizationUrl (params: { redirectUri: string, state: string, nonce: string, codeChallenge: string, scope?: string }): Promise<URL> {
    await this.ensure('authorization')
    return client.buildAuthorizationUrl(await this.#configuration(), {
      redirect_uri: params.redirectUri,
      scope: params.scope ?? 'openid profile email',
      state: params.state,
      nonce: params.nonce,
      code_challenge: params.codeChallenge,
      code_challenge_method: 'S256'
    })
  }

  // openid-client's configuration for the endpoints in use, rebuilt when they change.
  async #configuration (): Promise<client.Configuration> {
    const endpoints = this.#options.metadata.endpoints
    if (this.#config?.endpoints === endpoints) return this.#config.configuration
    const o = this.#options
    const method = o.auth.method
    if (endpoints.authMethods !== null && endpoints.authMethods.length > 0 && !endpoints.authMethods.includes(method)) {
      throw new KeycloakRejected(400, `the provider does not support keycloak.client_auth_method ${method} (token_endpoint_auth_methods_supported: ${endpoints.authMethods.join(', ')})`, { oauthError: 'invalid_client' })
    }
    const server: client.ServerMetadata = {
      issuer: o.issuer,
      ...(endpoints.authorization !== null ? { authorization_endpoint: endpoints.authorization } : {}),
      ...(endpoints.endSession !== null ? { end_session_endpoint: endpoints.endSession } : {}),
      ...(endpoints.token !== null ? { token_endpoint: endpoints.token } : {}),
      ...(endpoints.userinfo !== null ? { userinfo_endpoint: endpoints.userinfo } : {}),
      ...(endpoints.jwks !== null ? { jwks_uri: endpoints.jwks } : {}),
      code_challenge_methods_supported: ['S256']
    }
    const configuration = new client.Configuration(server, o.clientId, { id_token_signed_response_alg: 'RS256' }, await this.#clientAuthentication())
    // The pool's deadline governs; openid-client's own (30 s) must never be the shorter one.
    configuration.timeout = 3600
    configuration[client.customFetch] = (url, init) => this.#fetch(url, init)
    if (Object.values(endpoints).some((u) => typeof u === 'string' && u.startsWith('http:'))) client.allowInsecureRequests(configuration)
    this.#config = { endpoints, configuration }
    return configuration
  }

  #clientAuthentication (): Promise<client.ClientAuth> {
    this.#auth ??= (async () => {
      const { method, secret, privateKey, keyId } = this.#options.auth
      if (method === 'private_key_jwt') {
        const key = await importPrivateKey(privateKey ?? '')
        return client.PrivateKeyJwt({ key: key.key, ...(keyId ?? key.kid) !== undefined ? { kid: (keyId ?? key.kid) as string } : {} })
      }
      if (secret === undefined) return client.None()
      // RFC 6749 §2.3.1: Basic URL-encodes the id and secret first; providers that do not decode
      // them need client_secret_post.
      return method === 'client_secret_post' ? client.ClientSecretPost(secret) : client.ClientSecretBasic(secret)
    })()
    return this.#auth
  }

  /** Exchanges the code from a callback URL over the back channel and checks the ID token. */
  async exchangeCode (callbackUrl: URL, checks: { codeVerifier: string, state: string, nonce: string }, redirectUri: string): Promise<TokenSet> {
    return await this.#grant(async (config) => await client.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: checks.codeVerifier,
      expectedState: checks.state,
      expectedNonce: checks.nonce,
      idTokenExpected: true
    }, { redirect_uri: redirectUri }))
  }

  /** Keycloak's direct access grant (ROPC) for a username and password. */
  async passwordGrant (username: string, password: string): Promise<TokenSet> {
    return await this.#grant(async (config) => await client.genericGrantRequest(config, 'password', { username, password, scope: 'openid profile email' }))
  }

  /** A service-account token (client credentials), for the Admin API. */
  async clientCredentials (): Promise<TokenSet> {
    return await this.#grant(async (config) => await client.clientCredentialsGrant(config), false)
  }

  /** Trades a refresh token for new tokens (the old refresh token may then be dead). */
  async refresh (refreshToken: string): Promise<TokenSet> {
    return await this.#grant(async (config) => await client.refreshTokenGrant(config, refreshToken))
  }

  /**
   * The public end-session URL (RP-initiated logout 1.0 §2) with `state`, which some
   * providers need before they send the browser back; null when the provider has none.
   */
  async endSessionUrl (params: { idTokenHint?: string | null, postLogoutRedirectUri?: string, state: string }): Promise<URL | null> {
    if (!this.canEndSession) return null
    const query: Record<string, string> = { client_id: this.#options.clientId, state: params.state }
    if (params.idTokenHint != null) query.id_token_hint = params.idTokenHint
    if (params.postLogoutRedirectUri !== undefined) query.post_logout_redirect_uri = params.postLogoutRedirectUri
    return client.buildEndSessionUrl(await this.#configuration(), query)
  }

  /**
   * The userinfo endpoint's claims for an access token (OIDC Core §5.3), whose `sub` must be
   * `subject`; through the pool, as every call.
   */
  async userinfo (accessToken: string, subject: string): Promise<Record<string, unknown>> {
    await this.ensure('userinfo')
    try {
      return await client.fetchUserInfo(await this.#configuration(), accessToken, subject) as Record<string, unknown>
    } catch (err) {
      throw keycloakErrorOf(err)
    }
  }

  /** Whether Keycloak accepted this client's credentials on the latest token request. */
  get clientAuth (): ClientAuthState {
    return this.#clientAuth
  }

  // Logged once per change, not per request (HOUSE-STYLE §5): at error, because nobody can
  // sign in through SSO until an operator fixes keycloak.client_id or keycloak.client_secret.
  #clientAuthIs (state: 'ok' | 'failed', error: KeycloakRejected | null): void {
    const previous = this.#clientAuth.state
    if (previous === state) return
    this.#clientAuth = { state, error: error === null ? null : (error.oauthError ?? String(error.status)), since: this.#options.clock.now() }
    const log = this.#options.log
    if (state === 'failed') {
      log?.error({ client_id: this.#options.clientId, status: error?.status, error: error?.oauthError }, 'keycloak refused the client credentials: single sign-on is misconfigured (check keycloak.client_id and keycloak.client_secret)')
    } else if (previous === 'failed') {
      log?.warn({ client_id: this.#options.clientId }, 'keycloak accepts the client credentials again')
    }
  }

  async #grant (request: (config: client.Configuration) => Promise<client.TokenEndpointResponse & client.TokenEndpointResponseHelpers>, forUser = true): Promise<TokenSet> {
    let response: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers
    try {
      await this.ensure('token')
      response = await request(await this.#configuration())
    } catch (err) {
      const error = keycloakErrorOf(err)
      // Keycloak authenticates the client before it looks at the grant, so any other 4xx
      // (a wrong password's invalid_grant) shows the credentials are fine.
      if (clientAuthRefused(error)) this.#clientAuthIs('failed', error)
      else if (error instanceof KeycloakRejected && error.status < 500) this.#clientAuthIs('ok', null)
      throw error
    }
    this.#clientAuthIs('ok', null)
    const now = this.#options.clock.now()
    // An access token need not be a JWT (RFC 6749 §1.4): an opaque one has no claims to read.
    const claims = jwtClaimsOrEmpty(response.access_token) as KeycloakClaims
    let idClaims: Record<string, unknown> | null = null
    if (response.id_token !== undefined) {
      await this.#verifyIdTokenSignature(response.id_token)
      idClaims = decodeJwt(response.id_token)
    }
    const sidOf = (c: Record<string, unknown> | null): string | null => typeof c?.sid === 'string' && c.sid !== '' ? c.sid : null
    const sid = sidOf(claims) ?? sidOf(idClaims)
    const subject = typeof claims.sub === 'string' ? claims.sub : typeof idClaims?.sub === 'string' ? idClaims.sub : null
    const userinfo = forUser && this.#options.userinfo === true && subject !== null ? await this.#userinfoOrNull(response.access_token, subject) : null
    const refreshIn = (response as { refresh_expires_in?: unknown }).refresh_expires_in
    return {
      accessToken: response.access_token,
      refreshToken: response.refresh_token ?? null,
      idToken: response.id_token ?? null,
      // Counted on our clock from `expires_in`, not from `exp`: a clock skew between
      // Gatehouse and Keycloak must not make a fresh token look expired (and refresh forever).
      accessExpiresAt: typeof response.expires_in === 'number' ? now + response.expires_in * 1000 : typeof claims.exp === 'number' ? claims.exp * 1000 : now + 300_000,
      refreshExpiresAt: typeof refreshIn === 'number' && refreshIn > 0 ? now + refreshIn * 1000 : null,
      claims,
      idClaims,
      userinfo,
      sid
    }
  }

  // Userinfo only adds to an identity the tokens already vouch for: a login goes on without it.
  async #userinfoOrNull (accessToken: string, subject: string): Promise<Record<string, unknown> | null> {
    try {
      return await this.userinfo(accessToken, subject)
    } catch (err) {
      this.#options.log?.warn({ reason: (err as Error).message }, 'userinfo unavailable; the identity comes from the tokens alone')
      return null
    }
  }

  /**
   * openid-client checks the ID token's claims (issuer, audience, nonce, times); its
   * signature is checked here against the realm's JWKS, which Gatehouse keeps anyway.
   */
  async #verifyIdTokenSignature (idToken: string): Promise<void> {
    const verify = async (): Promise<void> => {
      const keys = this.#options.jwks.keySet()
      if (keys === null) throw new joseErrors.JWKSNoMatchingKey()
      // Signature only: openid-client has checked the claims (issuer, audience, nonce, times).
      await compactVerify(idToken, keys)
    }
    try {
      await verify()
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey) || !await this.#options.jwks.refreshForUnknownKey('unknown_kid')) {
        throw new KeycloakRejected(502, `keycloak's ID token failed verification: ${(err as Error).message}`)
      }
      await verify().catch((again: unknown) => { throw new KeycloakRejected(502, `keycloak's ID token failed verification: ${(again as Error).message}`) })
    }
  }

  // openid-client calls the published endpoints; each request goes to the server the pool
  // picks instead, through its deadline and breaker.
  async #fetch (url: string, init: client.CustomFetchOptions): Promise<Response> {
    const endpoints = this.#options.metadata.endpoints
    if (url !== endpoints.token && url !== endpoints.userinfo && url !== endpoints.revocation) {
      throw new KeycloakUnavailable('bad_response', 'refusing a request to an endpoint the provider does not publish')
    }
    const grant = init.body instanceof URLSearchParams ? init.body.get('grant_type') : null
    const operation: KeycloakOperation = url === endpoints.userinfo ? 'userinfo' : grant === 'refresh_token' ? 'refresh' : 'token'
    return await this.#options.pool.call(operation, async (target) => await keycloakFetchBuffered(target.backChannel(url), init as RequestInit, target))
  }
}

function jwtClaimsOrEmpty (token: string): Record<string, unknown> {
  try {
    return decodeJwt(token)
  } catch {
    return {}
  }
}

type PrivateCryptoKey = Awaited<ReturnType<typeof importPKCS8>>

// A private key for private_key_jwt: a private JWK (JSON) or a PKCS#8 PEM, with its kid.
async function importPrivateKey (text: string): Promise<{ key: PrivateCryptoKey, kid: string | undefined }> {
  const trimmed = text.trim()
  if (trimmed.startsWith('{')) {
    const jwk = JSON.parse(trimmed) as JWK
    const key = await importJWK(jwk, jwk.alg ?? (jwk.kty === 'EC' ? 'ES256' : jwk.kty === 'OKP' ? 'EdDSA' : 'RS256'))
    return { key: key as PrivateCryptoKey, kid: jwk.kid }
  }
  return { key: await importPKCS8(trimmed, 'RS256', { extractable: false }), kid: undefined }
}
