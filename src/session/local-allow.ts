import type { Config } from '../config/schema.ts'

/**
 * Whether someone with these roles may be let in without Keycloak vouching for them now
 * (modes local and cached): `local_auth.allow` is `all`, `none`, or break-glass roles.
 */
export function localLoginAllowed (allow: Config['local_auth']['allow'], roles: readonly string[]): boolean {
  if (allow === 'all') return true
  if (allow === 'none') return false
  return allow.some((role) => roles.includes(role))
}
