import type { JWTPayload } from 'jose'
import type { Identity } from '../identity.ts'
import { internList, internOrNull, internString } from '../intern.ts'

/** The claims Gatehouse reads by default: Keycloak's (protocol-facts §C.3) and RFC 9068's. */
export interface KeycloakClaims extends JWTPayload {
  typ?: string
  azp?: string
  /** RFC 9068 §2.2: the client the token was issued to. */
  client_id?: string
  sid?: string
  preferred_username?: string
  email?: string
  email_verified?: boolean
  realm_access?: { roles?: unknown }
  resource_access?: Record<string, { roles?: unknown } | undefined>
  groups?: unknown
}

/** Where the identity is in a provider's claims (`claims.*`); Keycloak's by default. */
export interface ClaimMapping {
  /** What `Identity.user` (the user header) carries. */
  user: 'sub' | 'preferred_username' | 'email'
  username: string
  email: string
  /** Claim path of whether the e-mail address is verified (`email_verified`). */
  email_verified: string
  name: string
  groups: string
  /** Role claim paths; `{client}` stands for each accepted client id, whose roles are named `client:role`. */
  roles: readonly string[]
}

/** Keycloak's claims: what `claims.*` defaults to. */
export const KEYCLOAK_CLAIMS: ClaimMapping = Object.freeze({
  user: 'sub',
  username: 'preferred_username',
  email: 'email',
  email_verified: 'email_verified',
  name: 'name',
  groups: 'groups',
  roles: Object.freeze(['realm_access.roles', 'resource_access.{client}.roles'])
})

/** How claims become an identity: the mapping and the client ids whose client roles count. */
export interface ClaimsReader {
  mapping: ClaimMapping
  /** `keycloak.client_id` and `keycloak.audiences`. */
  clientIds: readonly string[]
}

/** The value at a dot-separated claim path (`realm_access.roles`), or undefined. */
export function claimAt (claims: Record<string, unknown>, path: string): unknown {
  if (!path.includes('.')) return claims[path]
  let node: unknown = claims
  for (const part of path.split('.')) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined
    node = (node as Record<string, unknown>)[part]
  }
  return node
}

/**
 * Roles a token grants, from every role path: a path with `{client}` is read once per client
 * id and its roles named `client:role` (the spelling oauth2-proxy's Keycloak provider uses,
 * so a realm role and a client role of one name never collide); others as named. A claim
 * that is a string is one role (some providers send a single role so).
 */
export function rolesFromClaims (claims: Record<string, unknown>, reader: ClaimsReader): string[] {
  const roles = new Set<string>()
  for (const path of reader.mapping.roles) {
    if (!path.includes('{client}')) {
      for (const role of stringList(claimAt(claims, path))) roles.add(role)
      continue
    }
    for (const clientId of reader.clientIds) {
      // A client id may hold dots; it is one key, so it is looked up, not split.
      const [before, after] = path.split('{client}') as [string, string]
      const parent = before === '' ? claims : claimAt(claims, before.replace(/\.$/, ''))
      const entry = parent !== null && typeof parent === 'object' ? (parent as Record<string, unknown>)[clientId] : undefined
      const value = after === '' ? entry : entry !== null && typeof entry === 'object' ? claimAt(entry as Record<string, unknown>, after.replace(/^\./, '')) : undefined
      for (const role of stringList(value)) roles.add(`${clientId}:${role}`)
    }
  }
  return [...roles]
}

/** The identity claims describe (a verified access token's, or a session's merged ones). */
export function identityFromClaims (claims: Record<string, unknown>, reader: ClaimsReader, accessToken: string | null): Identity {
  const m = reader.mapping
  const text = (path: string): string | null => {
    const value = claimAt(claims, path)
    return typeof value === 'string' && value !== '' ? value : null
  }
  // Shared, like the lists below: one person's tokens repeat the same subject, name and address.
  const sub = typeof claims.sub === 'string' ? internString(claims.sub) : ''
  const preferredUsername = internOrNull(text(m.username))
  const email = internOrNull(text(m.email))
  const user = m.user === 'sub' ? sub : (m.user === 'email' ? email : preferredUsername) ?? sub
  // OIDC Core §5.1 makes it a boolean; Amazon Cognito sends the string "true", which means the same.
  const verified = claimAt(claims, m.email_verified)
  return {
    user,
    preferredUsername,
    email,
    emailVerified: email !== null && (verified === true || verified === 'true'),
    // Shared with every identity holding the same lists: cached tokens are many, lists few.
    groups: internList(stringList(claimAt(claims, m.groups))),
    roles: internList(rolesFromClaims(claims, reader)),
    authMode: 'token',
    accessToken,
    expiresAt: typeof claims.exp === 'number' ? claims.exp * 1000 : null
  }
}

// Role and group names as the identity carries them. The app reads them from comma-separated
// headers (X-Auth-Request-Roles, -Groups), so a name holding a comma would reach it as two
// (`user,admin` as user and admin); one holding a control character could not be sent at all.
// Such names are dropped here, once: no policy can name them either (policy.ts allows neither
// in a role or group), so no Gatehouse decision changes, and the app sees only names it can
// tell apart.
const LISTABLE_NAME = /^[^,\u0000-\u001f\u007f]+$/

function stringList (value: unknown): string[] {
  const list = typeof value === 'string' ? [value] : Array.isArray(value) ? value : []
  return list.filter((v): v is string => typeof v === 'string' && LISTABLE_NAME.test(v))
}
