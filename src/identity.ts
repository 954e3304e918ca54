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
