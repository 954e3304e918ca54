import { Signer } from '@fastify/cookie'
import { parseCookie as parse } from 'cookie'

/** Where a cookie's Secure flag comes from (`session.cookie_secure`). */
export type SecureSetting = 'auto' | 'always' | 'never'

/** The cookies Gatehouse sets. */
export interface CookieNames {
  session: string
  csrf: string
  login: string
}

const CSRF = 'gatehouse_csrf'
const LOGIN = 'gatehouse_login'

/**
 * Cookie names for a request: behind TLS every cookie gets the `__Host-` prefix, which
 * browsers accept only from a secure origin with `Path=/` and no `Domain`, so no subdomain
 * or plain-HTTP page can plant or overwrite one (RFC 6265bis §4.1.3.2).
 */
export function cookieNames (sessionName: string, secure: boolean): CookieNames {
  const prefix = secure ? '__Host-' : ''
  return { session: `${prefix}${sessionName}`, csrf: `${prefix}${CSRF}`, login: `${prefix}${LOGIN}` }
}

/**
 * Whether Gatehouse's cookies are Secure (and so `__Host-` named) for a request that reached
 * the origin over `protocol`: `session.cookie_secure`, where `auto` follows `server.public_url`
 * when it is set, else the request's own scheme. The one rule for setting and for reading.
 */
export function cookiesSecure (setting: SecureSetting, publicUrl: string | undefined, protocol: string | undefined): boolean {
  if (setting !== 'auto') return setting === 'always'
  return publicUrl !== undefined ? publicUrl.startsWith('https:') : protocol === 'https'
}

/**
 * Signs and reads Gatehouse's cookies with the cookie key ring (@fastify/cookie's signer:
 * the first key signs, every key verifies). A value whose signature does not verify under
 * any key reads as absent: a tampered cookie is no cookie.
 */
export class CookieJar {
  readonly #signer: InstanceType<typeof Signer>
  readonly #sessionName: string

  constructor (keys: readonly string[], sessionName: string) {
    this.#signer = new Signer([...keys])
    this.#sessionName = sessionName
  }

  /** A value signed with the current key. */
  sign (value: string): string {
    return this.#signer.sign(value)
  }

  /** The verified value of a signed cookie, or null. */
  unsign (signed: string | undefined): string | null {
    if (signed === undefined || signed === '') return null
    const result = this.#signer.unsign(signed)
    return result.valid ? result.value : null
  }

  /** Reads one cookie from a Cookie header, verified (see {@link raw} for which name). */
  read (cookieHeader: string | undefined, kind: keyof CookieNames, secure: boolean): string | null {
    return this.unsign(this.raw(cookieHeader, kind, secure) ?? undefined)
  }

  /**
   * One cookie's value as sent, unverified: for values sealed otherwise. Only the name this
   * request would set is read: with Secure cookies the `__Host-` one alone. An unprefixed
   * cookie can be planted by anyone who can set a cookie for the host (a sibling subdomain, a
   * plain-HTTP man in the middle), so reading it would let them fix a session or a CSRF token.
   */
  raw (cookieHeader: string | undefined, kind: keyof CookieNames, secure: boolean): string | null {
    if (cookieHeader === undefined || cookieHeader === '') return null
    return parse(cookieHeader)[cookieNames(this.#sessionName, secure)[kind]] ?? null
  }

  /** The session secret a request carries, verified, or null. */
  sessionSecret (cookieHeader: string | string[] | undefined, secure: boolean): string | null {
    return this.read(typeof cookieHeader === 'string' ? cookieHeader : undefined, 'session', secure)
  }
}
