/**
 * Keycloak's URL layout (protocol-facts §C.1). Gatehouse derives every endpoint from a base
 * URL and the realm instead of depending on discovery, so start-up never waits on Keycloak.
 */

/** The OIDC and Admin endpoints of one realm on one base URL. */
export interface RealmEndpoints {
  /** `{base}/realms/{realm}` */
  realmUrl: string
  discovery: string
  authorization: string
  token: string
  certs: string
  userinfo: string
  logout: string
  introspection: string
  revocation: string
  /** `{base}/admin/realms/{realm}` */
  admin: string
}

/** Endpoints of `realm` under `base` (a public issuer base or a back-channel server URL). */
export function realmEndpoints (base: string, realm: string): RealmEndpoints {
  const root = base.replace(/\/+$/, '')
  const realmUrl = `${root}/realms/${encodeURIComponent(realm)}`
  const oidc = `${realmUrl}/protocol/openid-connect`
  return {
    realmUrl,
    discovery: `${realmUrl}/.well-known/openid-configuration`,
    authorization: `${oidc}/auth`,
    token: `${oidc}/token`,
    certs: `${oidc}/certs`,
    userinfo: `${oidc}/userinfo`,
    logout: `${oidc}/logout`,
    introspection: `${oidc}/token/introspect`,
    revocation: `${oidc}/revoke`,
    admin: `${root}/admin/realms/${encodeURIComponent(realm)}`
  }
}

/**
 * The base URL of a public issuer: `https://sso.example.com/auth/realms/x` → `https://sso.example.com/auth`.
 * Browser-facing endpoints are built from it (protocol-facts §C.2).
 */
export function issuerBase (issuer: string): string {
  return issuer.replace(/\/realms\/[^/]+\/?$/, '')
}
