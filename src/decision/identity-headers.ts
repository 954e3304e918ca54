import type { HeadersConfig } from '../config/schema.ts'
import type { Identity } from '../identity.ts'
import { joinedList } from '../intern.ts'

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
  set(config.groups, joinedList(identity.groups))
  set(config.roles, joinedList(identity.roles))
  set(config.permissions, identity.permissions === undefined ? null : joinedList(identity.permissions))
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
 * The client-sent headers that must never reach the app, derived once from the header
 * configuration and used by every entry point: the proxy strips them, Envoy is told to remove
 * them (`x-envoy-auth-headers-to-remove`, gRPC `headers_to_remove`).
 */
export interface SpoofableHeaders {
  /**
   * Every configured identity header in both spellings (`-` and `_`), lower-case, and
   * `authorization` when Gatehouse sets it itself: the names a gateway must remove whatever
   * the request carried, since it may forward headers Gatehouse never saw.
   */
  readonly names: readonly string[]
  /** Whether a header name is spoofable: one of {@link names}, or of the `X-Auth-Request-*` family in any spelling. */
  readonly test: (name: string) => boolean
}

/**
 * The {@link SpoofableHeaders} of a header configuration: every configured identity header,
 * whatever its case or `_` spelling (oauth2-proxy and nginx treat `_` as `-`), the whole
 * `X-Auth-Request-*` family, and `Authorization` only when Gatehouse sets it itself.
 */
export function spoofableHeaders (config: HeadersConfig): SpoofableHeaders {
  const canonical = new Set([config.user, config.preferred_username, config.email, config.groups, config.roles, config.permissions, config.mode, config.access_token].map(normaliseHeaderName))
  if (config.pass_authorization_header) canonical.add('authorization')
  const names = Object.freeze([...canonical].flatMap((name) => name.includes('-') ? [name, name.replaceAll('-', '_')] : [name]))
  // Called for every header of every request: names from Node are already lower-case, so
  // only an `_` needs rewriting, and most names have none.
  const test = (name: string): boolean => {
    const lower = name.toLowerCase()
    const normalised = lower.includes('_') ? lower.replaceAll('_', '-') : lower
    return canonical.has(normalised) || normalised.startsWith(CONVENTIONAL_PREFIX)
  }
  return Object.freeze({ names, test })
}

function headerValue (value: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = value.replace(/[\u0000-\u001f\u007f]/g, '')
  return /^[\u0020-\u007e]*$/.test(clean) ? clean : Buffer.from(clean, 'utf8').toString('latin1')
}
