import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose'
import type { Clock } from '../clock.ts'
import type { JwksManager } from '../keycloak/jwks.ts'

const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout'
// Keycloak's logout tokens live 120 s (protocol-facts §C.6); one older than this is refused
// even without `exp`, so a captured token cannot be replayed days later.
const MAX_AGE_SECONDS = 300

/** Who a valid logout token logs out. */
export interface LogoutTarget {
  sid: string | null
  sub: string | null
  jti: string | null
}

/** What checking a logout token needs. */
export interface LogoutTokenOptions {
  jwks: JwksManager
  issuer: string
  clientId: string
  algorithms: readonly string[]
  clockSkewSeconds: number
  clock: Clock
}

/**
 * Checks a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.6, protocol-facts
 * §C.6): signature against the realm's JWKS (refreshed once for an unknown key), `iss`, `aud`
 * = our client, `iat` present and recent, the back-channel logout `events` member, no
 * `nonce`, and a `sid` or `sub`. Throws with a reason on any failure.
 */
export async function verifyLogoutToken (token: string, o: LogoutTokenOptions): Promise<LogoutTarget> {
  const verify = async (): Promise<JWTPayload> => {
    const keys = o.jwks.keySet()
    if (keys === null) throw new joseErrors.JWKSNoMatchingKey()
    const { payload } = await jwtVerify(token, keys, {
      issuer: o.issuer,
      audience: o.clientId,
      algorithms: [...o.algorithms],
      clockTolerance: o.clockSkewSeconds,
      maxTokenAge: MAX_AGE_SECONDS,
      requiredClaims: ['iat'],
      currentDate: new Date(o.clock.now())
    })
    return payload
  }
  let payload: JWTPayload
  try {
    payload = await verify()
  } catch (err) {
    if (!(err instanceof joseErrors.JWKSNoMatchingKey) || !await o.jwks.refreshForUnknownKey('unknown_kid')) throw err
    payload = await verify()
  }
  const events = payload.events as Record<string, unknown> | undefined
  if (typeof events !== 'object' || events === null || typeof events[BACKCHANNEL_LOGOUT_EVENT] !== 'object') throw new Error('no back-channel logout event')
  if ('nonce' in payload) throw new Error('a logout token must not carry a nonce')
  const sid = typeof payload.sid === 'string' && payload.sid !== '' ? payload.sid : null
  const sub = typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : null
  if (sid === null && sub === null) throw new Error('neither sid nor sub')
  return { sid, sub, jti: typeof payload.jti === 'string' ? payload.jti : null }
}
