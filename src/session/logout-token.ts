import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import type { JwksManager } from '../keycloak/jwks.ts'

const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout'
// Keycloak's logout tokens live 120 s (protocol-facts §C.6); one older than this is refused
// even without `exp`, so a captured token cannot be replayed days later.
const MAX_AGE_SECONDS = 300

// JWS `typ` values a logout token may carry (Back-Channel Logout 1.0 §2.4 recommends
// `logout+jwt`; Keycloak sends it, older providers `JWT`). Compared case-insensitively with an
// optional `application/` prefix, as RFC 7515 §4.1.9 says media types are.
const LOGOUT_TOKEN_TYPES = new Set(['logout+jwt', 'jwt'])

/** Who a valid logout token logs out. */
export interface LogoutTarget {
  sid: string | null
  sub: string | null
  jti: string
}

/**
 * The `jti`s of logout tokens already accepted, each kept for as long as such a token could
 * still be accepted (its age limit plus the clock skew), so a captured token cannot be
 * replayed (Back-Channel Logout 1.0 §2.6 step 8).
 */
export class LogoutReplayCache {
  readonly #seen: LRUCache<string, number>
  readonly #clock: Clock
  readonly #keepMs: number

  constructor (clock: Clock, clockSkewSeconds: number, maxEntries = 10_000) {
    this.#clock = clock
    this.#keepMs = (MAX_AGE_SECONDS + clockSkewSeconds) * 1000
    this.#seen = new LRUCache({ max: maxEntries })
  }

  /** Records `jti`; false when it was already recorded and is still within its age limit. */
  firstUse (jti: string): boolean {
    const now = this.#clock.now()
    const until = this.#seen.get(jti)
    if (until !== undefined && until > now) return false
    this.#seen.set(jti, now + this.#keepMs)
    return true
  }
}

/** What checking a logout token needs. */
export interface LogoutTokenOptions {
  jwks: JwksManager
  issuer: string
  clientId: string
  algorithms: readonly string[]
  clockSkewSeconds: number
  clock: Clock
  replays: LogoutReplayCache
}

/**
 * Checks a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.6, protocol-facts
 * §C.6): header `typ` `logout+jwt` or `JWT`, signature against the realm's JWKS (refreshed
 * once for an unknown key), `iss`, `aud` = our client, `iat` present and recent, a `jti` not
 * seen before, `events` an object holding the back-channel logout member (itself an object),
 * no `nonce`, and a `sid` or `sub`. Throws with a reason on any failure.
 */
export async function verifyLogoutToken (token: string, o: LogoutTokenOptions): Promise<LogoutTarget> {
  const verify = async (): Promise<JWTPayload> => {
    const keys = o.jwks.keySet()
    if (keys === null) throw new joseErrors.JWKSNoMatchingKey()
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      issuer: o.issuer,
      audience: o.clientId,
      algorithms: [...o.algorithms],
      clockTolerance: o.clockSkewSeconds,
      maxTokenAge: MAX_AGE_SECONDS,
      requiredClaims: ['iat'],
      currentDate: new Date(o.clock.now())
    })
    const typ = typeof protectedHeader.typ === 'string' ? protectedHeader.typ.toLowerCase().replace(/^application\//, '') : null
    if (typ === null || !LOGOUT_TOKEN_TYPES.has(typ)) throw new Error(`header typ ${JSON.stringify(protectedHeader.typ ?? null)} is not logout+jwt`)
    return payload
  }
  let payload: JWTPayload
  try {
    payload = await verify()
  } catch (err) {
    if (!(err instanceof joseErrors.JWKSNoMatchingKey) || !await o.jwks.refreshForUnknownKey('unknown_kid')) throw err
    payload = await verify()
  }
  if (!isObject(payload.events) || !isObject(payload.events[BACKCHANNEL_LOGOUT_EVENT])) throw new Error('no back-channel logout event')
  if ('nonce' in payload) throw new Error('a logout token must not carry a nonce')
  const sid = typeof payload.sid === 'string' && payload.sid !== '' ? payload.sid : null
  const sub = typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : null
  if (sid === null && sub === null) throw new Error('neither sid nor sub')
  const jti = payload.jti
  if (typeof jti !== 'string' || jti === '') throw new Error('no jti')
  // Last, so a token refused for another reason does not use up its jti.
  if (!o.replays.firstUse(jti)) throw new Error('jti already used: a replayed logout token')
  return { sid, sub, jti }
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
