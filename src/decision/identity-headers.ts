import type { HeadersConfig } from '../config/schema.ts'
import type { Identity } from '../identity.ts'

/** The prefix of oauth2-proxy's identity headers; always stripped, whatever names are configured. */
const CONVENTIONAL_PREFIX = 'x-auth-request-'

/**
 * The identity headers the app receives (DESIGN §3), names as configured. Values are sent as
 * UTF-8 bytes (Node writes header strings as latin1, so a name like 李 must be re-spelt) with
 * control characters removed, so a claim can never split a header.
 */
export function identityHeaders (identity: Identity, config: HeadersConfig): Record<string, string> {
  const out: Record<string, string> = {}
  const set = (name: string, value: string | null): void => {
    if (value !== null && value !== '') out[name.toLowerCase()] = headerValue(value)
  }
  set(config.user, identity.user)
  set(config.preferred_username, identity.preferredUsername)
  set(config.email, identity.email)
  set(config.groups, identity.groups.join(','))
  set(config.roles, identity.roles.join(','))
  set(config.mode, identity.authMode)
  if (config.pass_access_token) set(config.access_token, identity.accessToken)
  if (config.pass_authorization_header && identity.accessToken !== null) out.authorization = `Bearer ${identity.accessToken}`
  return out
}

/** A header name as compared for spoofing: lower-case, `_` read as `-` (oauth2-proxy does the same). */
export function normaliseHeaderName (name: string): string {
  return name.toLowerCase().replaceAll('_', '-')
}

/**
 * A predicate for client-sent headers that must never reach the app: every configured
 * identity header, whatever its case or `_` spelling, and the whole `X-Auth-Request-*`
 * family. `Authorization` is included only when Gatehouse sets it itself.
 */
export function spoofableHeaderTest (config: HeadersConfig): (name: string) => boolean {
  const names = new Set([config.user, config.preferred_username, config.email, config.groups, config.roles, config.mode, config.access_token].map(normaliseHeaderName))
  if (config.pass_authorization_header) names.add('authorization')
  // Called for every header of every request: names from Node are already lower-case, so
  // only an `_` needs rewriting, and most names have none.
  return (name) => {
    const lower = name.toLowerCase()
    const normalised = lower.includes('_') ? lower.replaceAll('_', '-') : lower
    return names.has(normalised) || normalised.startsWith(CONVENTIONAL_PREFIX)
  }
}

function headerValue (value: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = value.replace(/[\u0000-\u001f\u007f]/g, '')
  return /^[\u0020-\u007e]*$/.test(clean) ? clean : Buffer.from(clean, 'utf8').toString('latin1')
}
