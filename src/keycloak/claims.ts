import type { JWTPayload } from 'jose'
import type { Identity } from '../identity.ts'

/** The Keycloak claims Gatehouse reads (protocol-facts §C.3). */
export interface KeycloakClaims extends JWTPayload {
  typ?: string
  azp?: string
  sid?: string
  preferred_username?: string
  email?: string
  realm_access?: { roles?: unknown }
  resource_access?: Record<string, { roles?: unknown } | undefined>
  groups?: unknown
}

/**
 * Roles a token grants: realm roles as named, and the client roles of `clientIds` (this app
 * and the audiences it accepts) as `client:role`, the spelling oauth2-proxy's Keycloak
 * provider uses, so a realm role and a client role of the same name never collide.
 */
export function rolesFromClaims (claims: KeycloakClaims, clientIds: readonly string[]): string[] {
  const roles = new Set<string>()
  for (const role of stringList(claims.realm_access?.roles)) roles.add(role)
  for (const clientId of clientIds) {
    for (const role of stringList(claims.resource_access?.[clientId]?.roles)) roles.add(`${clientId}:${role}`)
  }
  return [...roles]
}

/** The identity a verified access token describes. */
export function identityFromClaims (claims: KeycloakClaims, clientIds: readonly string[], accessToken: string | null): Identity {
  return {
    user: typeof claims.sub === 'string' ? claims.sub : '',
    preferredUsername: typeof claims.preferred_username === 'string' ? claims.preferred_username : null,
    email: typeof claims.email === 'string' ? claims.email : null,
    groups: stringList(claims.groups),
    roles: rolesFromClaims(claims, clientIds),
    authMode: 'token',
    accessToken,
    expiresAt: typeof claims.exp === 'number' ? claims.exp * 1000 : null
  }
}

function stringList (value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : []
}
