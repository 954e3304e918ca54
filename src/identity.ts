/** How a caller was authenticated (DESIGN §3, `X-Auth-Request-Mode`); `service`: a Gatehouse service token (issue 16). */
export type AuthMode = 'keycloak' | 'cached' | 'local' | 'token' | 'service'

/** Who a request belongs to, as every adapter forwards it. */
export interface Identity {
  /** `sub` for Keycloak users, the user name for local users. */
  user: string
  preferredUsername: string | null
  email: string | null
  /**
   * Whether the provider vouches for {@link email} (the `email_verified` claim, `claims.email_verified`).
   * Local users' addresses, set by an operator, count as verified; absent means not verified.
   * Only a verified address satisfies a policy's `emails` or `email_domains`.
   */
  emailVerified?: boolean
  /** Group paths (`/staff/admins`) as the token carries them. */
  groups: readonly string[]
  /**
   * Realm roles as named, client roles as `client:role`. As a token or a session carries them
   * (before policies apply); once decided, expanded through the policies' mappings, groups and
   * inheritance (authz/roles.ts).
   */
  roles: readonly string[]
  /** The permissions the expanded roles carry; set once decided, absent before. */
  permissions?: readonly string[]
  authMode: AuthMode
  /** The access token the caller presented or the session holds, when there is one. */
  accessToken: string | null
  /** When the credential stops being valid, in milliseconds since the epoch. */
  expiresAt: number | null
}

/**
 * A frozen copy of `identity`, with `roles` and `permissions` as given. Every field is set,
 * in one order, so that all identities share one hidden class: a spread (`{ ...identity }`)
 * gives each copy a class of its own, and ten thousand cached identities paid for ten
 * thousand of them. An absent `emailVerified` is false, as it means.
 */
export function frozenIdentity (identity: Identity, roles: readonly string[] = identity.roles, permissions: readonly string[] | undefined = identity.permissions): Identity {
  return Object.freeze({
    user: identity.user,
    preferredUsername: identity.preferredUsername,
    email: identity.email,
    emailVerified: identity.emailVerified === true,
    groups: identity.groups,
    roles,
    permissions,
    authMode: identity.authMode,
    accessToken: identity.accessToken,
    expiresAt: identity.expiresAt
  })
}
