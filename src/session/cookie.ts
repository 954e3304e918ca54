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

/** Whether cookies on this request are Secure. */
export function isSecure (setting: SecureSetting, protocol: string): boolean {
  return setting === 'always' || (setting === 'auto' && protocol === 'https')
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

  /** Reads one cookie (either spelling of its name) from a Cookie header, verified. */
  read (cookieHeader: string | undefined, kind: keyof CookieNames): string | null {
    return this.unsign(this.raw(cookieHeader, kind) ?? undefined)
  }

  /** One cookie's value as sent (either spelling of its name), unverified: for values sealed otherwise. */
  raw (cookieHeader: string | undefined, kind: keyof CookieNames): string | null {
    if (cookieHeader === undefined || cookieHeader === '') return null
    const cookies = parse(cookieHeader)
    return cookies[cookieNames(this.#sessionName, true)[kind]] ?? cookies[cookieNames(this.#sessionName, false)[kind]] ?? null
  }

  /** The session secret a request carries, verified, or null. */
  sessionSecret (cookieHeader: string | string[] | undefined): string | null {
    return this.read(typeof cookieHeader === 'string' ? cookieHeader : undefined, 'session')
  }
}
