import { realmEndpoints, issuerBase } from './endpoints.ts'

/** `keycloak.kind`: Keycloak (Admin API, sync queue, Keycloak's claims) or any standards provider. */
export type ProviderKind = 'keycloak' | 'generic'

/**
 * The provider's endpoints as it publishes them (public URLs: discovery's, or configured).
 * Back-channel calls move them onto a server with {@link ProviderLayout.onServer}.
 */
export interface ProviderEndpoints {
  authorization: string | null
  token: string | null
  jwks: string | null
  userinfo: string | null
  endSession: string | null
  revocation: string | null
  /** `token_endpoint_auth_methods_supported`, when discovery lists them. */
  authMethods: readonly string[] | null
}

/** An empty set: nothing known. */
export const NO_ENDPOINTS: ProviderEndpoints = Object.freeze({ authorization: null, token: null, jwks: null, userinfo: null, endSession: null, revocation: null, authMethods: null })

/**
 * Where a provider's published URLs are on each back-channel server. A server URL stands for a
 * public prefix: for Keycloak the issuer's base (`https://sso.example.com/auth` of
 * `…/auth/realms/acme`), so one server serves every path Keycloak publishes under it
 * (protocol-facts §C.1-2); for a generic provider the issuer itself. A published URL under
 * that prefix, or under any configured server (Keycloak's `hostname-backchannel-dynamic`
 * publishes the URL it was asked on), is moved onto the server a call goes to; a URL on
 * another host (some providers keep their JWKS elsewhere) is called as published.
 */
export class ProviderLayout {
  readonly kind: ProviderKind
  readonly issuer: string
  readonly realm: string
  readonly #prefixes: string[]

  constructor (options: { kind: ProviderKind, issuer: string, realm: string, servers: readonly string[] }) {
    this.kind = options.kind
    this.issuer = trim(options.issuer)
    this.realm = options.realm
    const publicPrefix = options.kind === 'keycloak' ? trim(issuerBase(this.issuer)) : this.issuer
    // Longest first, so a server configured under the public prefix's path is matched before it.
    this.#prefixes = [...new Set([publicPrefix, ...options.servers.map(trim)])].sort((a, b) => b.length - a.length)
  }

  /** `url` on `server` (see the class comment). */
  onServer (url: string, server: string): string {
    for (const prefix of this.#prefixes) {
      if (url === prefix || (url.startsWith(prefix) && '/?#'.includes(url[prefix.length] as string))) return trim(server) + url.slice(prefix.length)
    }
    return url
  }

  /** The discovery document's URL on `server` (OIDC Discovery 1.0 §4). */
  discoveryOn (server: string): string {
    return this.onServer(`${this.issuer}/.well-known/openid-configuration`, server)
  }

  /**
   * Keycloak's URL layout, public: the fallback for a Keycloak realm before any discovery
   * document was read (protocol-facts §C.1). Null for a generic provider, whose layout is
   * its own.
   */
  keycloakLayout (): ProviderEndpoints | null {
    if (this.kind !== 'keycloak') return null
    const e = realmEndpoints(issuerBase(this.issuer), this.realm)
    return { authorization: e.authorization, token: e.token, jwks: e.certs, userinfo: e.userinfo, endSession: e.logout, revocation: e.revocation, authMethods: null }
  }
}

/**
 * The endpoints a discovery document names (OIDC Discovery 1.0 §3). Only absolute http(s)
 * URLs are taken: anything else reads as not published.
 */
export function endpointsOfDiscovery (document: Record<string, unknown>): ProviderEndpoints {
  const url = (key: string): string | null => {
    const value = document[key]
    if (typeof value !== 'string') return null
    try {
      const parsed = new URL(value)
      return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? value : null
    } catch {
      return null
    }
  }
  const methods = document.token_endpoint_auth_methods_supported
  return {
    authorization: url('authorization_endpoint'),
    token: url('token_endpoint'),
    jwks: url('jwks_uri'),
    userinfo: url('userinfo_endpoint'),
    endSession: url('end_session_endpoint'),
    revocation: url('revocation_endpoint'),
    authMethods: Array.isArray(methods) ? methods.filter((m): m is string => typeof m === 'string') : null
  }
}

function trim (url: string): string {
  return url.replace(/\/+$/, '')
}
