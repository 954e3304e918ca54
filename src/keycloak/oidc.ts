import * as client from 'openid-client'
import { compactVerify, errors as joseErrors, decodeJwt } from 'jose'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import type { KeycloakClaims } from './claims.ts'
import type { KeycloakPool, KeycloakOperation } from './failover.ts'
import type { JwksManager } from './jwks.ts'
import type { RealmEndpoints } from './endpoints.ts'
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
  /** Claims of the access token (roles, groups, sid…): it is what the decision reads. */
  claims: KeycloakClaims
  /**
   * The provider's session id (`sid`), for back-channel logout: from the access token, else
   * from the ID token (OIDC Back-Channel Logout 1.0 §2.1 puts it in the ID token; Keycloak
   * puts it in both). Null when neither has one.
   */
  sid: string | null
}

/** Options of {@link OidcClient}. */
export interface OidcOptions {
  pool: KeycloakPool
  jwks: JwksManager
  /** Browser-facing endpoints, under the public issuer. */
  publicEndpoints: RealmEndpoints
  issuer: string
  clientId: string
  clientSecret: string | undefined
  clock: Clock
  /** Tolerance on ID token times, in seconds. */
  clockSkewSeconds: number
  /** Where a change of {@link ClientAuthState} is logged (an error when Keycloak refuses the credentials). */
  log?: Logger
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
 * Keycloak's OIDC endpoints through openid-client, every request through the server pool:
 * the browser is sent to the public authorization and logout endpoints; the code exchange,
 * the password grant and refreshes go to the back channel of whichever server the pool picks
 * (openid-client's `customFetch` rewrites the request onto it), under the pool's deadline
 * and breakers. Failures come out as {@link KeycloakUnavailable} or {@link KeycloakRejected}.
 */
export class OidcClient {
  readonly #options: OidcOptions
  readonly #config: client.Configuration
  readonly #templateRealmUrl: string
  #clientAuth: ClientAuthState = { state: 'unknown', error: null, since: null }

  constructor (options: OidcOptions) {
    this.#options = options
    // The token endpoint named here is a template: customFetch moves each request to the
    // realm URL of the server the pool chose.
    const template = options.pool.endpointsOf(options.pool.servers[0] as string) as RealmEndpoints
    this.#templateRealmUrl = template.realmUrl
    const server: client.ServerMetadata = {
      issuer: options.issuer,
      authorization_endpoint: options.publicEndpoints.authorization,
      end_session_endpoint: options.publicEndpoints.logout,
      token_endpoint: template.token,
      userinfo_endpoint: template.userinfo,
      jwks_uri: template.certs,
      code_challenge_methods_supported: ['S256']
    }
    const auth = options.clientSecret === undefined ? client.None() : client.ClientSecretBasic(options.clientSecret)
    this.#config = new client.Configuration(server, options.clientId, { id_token_signed_response_alg: 'RS256' }, auth)
    // The pool's deadline governs; openid-client's own (30 s) must never be the shorter one.
    this.#config.timeout = 3600
    this.#config[client.customFetch] = (url, init) => this.#fetch(url, init)
    if ([options.publicEndpoints.authorization, template.token].some((u) => u.startsWith('http:'))) client.allowInsecureRequests(this.#config)
  }

  /** The public authorization URL a browser is sent to (code flow with PKCE S256, state and nonce). */
  authorizationUrl (params: { redirectUri: string, state: string, nonce: string, codeChallenge: string, scope?: string }): URL {
    return client.buildAuthorizationUrl(this.#config, {
      redirect_uri: params.redirectUri,
      scope: params.scope ?? 'openid profile email',
      state: params.state,
      nonce: params.nonce,
      code_challenge: params.codeChallenge,
      code_challenge_method: 'S256'
    })
  }

  /** Exchanges the code from a callback URL over the back channel and checks the ID token. */
  async exchangeCode (callbackUrl: URL, checks: { codeVerifier: string, state: string, nonce: string }, redirectUri: string): Promise<TokenSet> {
    return await this.#grant(async () => await client.authorizationCodeGrant(this.#config, callbackUrl, {
      pkceCodeVerifier: checks.codeVerifier,
      expectedState: checks.state,
      expectedNonce: checks.nonce,
      idTokenExpected: true
    }, { redirect_uri: redirectUri }))
  }

  /** Keycloak's direct access grant (ROPC) for a username and password. */
  async passwordGrant (username: string, password: string): Promise<TokenSet> {
    return await this.#grant(async () => await client.genericGrantRequest(this.#config, 'password', { username, password, scope: 'openid profile email' }))
  }

  /** A service-account token (client credentials), for the Admin API. */
  async clientCredentials (): Promise<TokenSet> {
    return await this.#grant(async () => await client.clientCredentialsGrant(this.#config))
  }

  /** Trades a refresh token for new tokens (the old refresh token may then be dead). */
  async refresh (refreshToken: string): Promise<TokenSet> {
    return await this.#grant(async () => await client.refreshTokenGrant(this.#config, refreshToken))
  }

  /** The public end-session URL (RP-initiated logout). */
  endSessionUrl (params: { idTokenHint?: string | null, postLogoutRedirectUri?: string }): URL {
    const query: Record<string, string> = { client_id: this.#options.clientId }
    if (params.idTokenHint != null) query.id_token_hint = params.idTokenHint
    if (params.postLogoutRedirectUri !== undefined) query.post_logout_redirect_uri = params.postLogoutRedirectUri
    return client.buildEndSessionUrl(this.#config, query)
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

  async #grant (request: () => Promise<client.TokenEndpointResponse & client.TokenEndpointResponseHelpers>): Promise<TokenSet> {
    let response: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers
    try {
      response = await request()
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
    const claims = decodeJwt(response.access_token) as KeycloakClaims
    let sid = typeof claims.sid === 'string' && claims.sid !== '' ? claims.sid : null
    if (response.id_token !== undefined) {
      await this.#verifyIdTokenSignature(response.id_token)
      const idSid = decodeJwt(response.id_token).sid
      sid ??= typeof idSid === 'string' && idSid !== '' ? idSid : null
    }
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
      sid
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

  async #fetch (url: string, init: client.CustomFetchOptions): Promise<Response> {
    const suffix = url.startsWith(this.#templateRealmUrl) ? url.slice(this.#templateRealmUrl.length) : null
    if (suffix === null) throw new KeycloakUnavailable('bad_response', `refusing a request outside the realm: ${url}`)
    const grant = init.body instanceof URLSearchParams ? init.body.get('grant_type') : null
    const operation: KeycloakOperation = grant === 'refresh_token' ? 'refresh' : suffix.endsWith('/token') ? 'token' : suffix.endsWith('/userinfo') ? 'userinfo' : 'token'
    return await this.#options.pool.call(operation, async (target) => await keycloakFetchBuffered(target.endpoints.realmUrl + suffix, init as RequestInit, target))
  }
}
