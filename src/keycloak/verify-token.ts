import { jwtVerify, decodeProtectedHeader, errors as joseErrors } from 'jose'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import { internString } from '../intern.ts'
import type { HotPathMetrics } from '../metrics/registry.ts'
import type { Identity } from '../identity.ts'
import type { KeycloakClaims } from './claims.ts'
import type { JwksManager } from './jwks.ts'

/** Why an access token was refused: the deny reason in logs, metrics and `error_description`. */
export type TokenRejection =
  | 'malformed'
  | 'too_large'
  | 'alg_not_allowed'
  | 'invalid_signature'
  | 'unknown_kid'
  | 'jwks_unavailable'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'wrong_type'
  | 'missing_claim'

/** A verified access token. */
export interface VerifiedToken {
  /** The payload; empty once {@link identity} is set (see {@link VerifierOptions.identityOf}). */
  claims: KeycloakClaims
  /** Who the token says it is, when the verifier was given {@link VerifierOptions.identityOf}. */
  identity?: Identity
  /** `exp`, in milliseconds since the epoch. */
  expiresAt: number
  /** The `kid` of the key that verified it (from the protected header), or null when it named none. */
  kid: string | null
  /** Whether it says it is an access token: header `typ` `at+jwt` (RFC 9068 §2.1) or Keycloak's `typ: Bearer` claim. */
  access: boolean
}

/** The result of {@link AccessTokenVerifier.verify}: a value, never a throw. */
export type VerifyOutcome =
  | { ok: true, token: VerifiedToken, cached: boolean }
  | { ok: false, reason: TokenRejection, detail: string }

/** Options for {@link AccessTokenVerifier}. */
export interface VerifierOptions {
  jwks: JwksManager
  /** The only `iss` accepted: `keycloak.issuer`. */
  issuer: string
  /** Client ids accepted in `aud`, `azp` or `client_id`. */
  clientIds: readonly string[]
  /** Further values accepted in `aud` only (resource indicators, `tokens.audiences`). Default none. */
  audiences?: readonly string[]
  /** Accepted JWS algorithms (asymmetric only; the schema cannot express others). */
  algorithms: readonly string[]
  /** Tolerance on `exp`, `nbf` and `iat`, in seconds. */
  clockSkewSeconds: number
  /** Verified tokens remembered; 0 turns the cache off. */
  cacheMaxEntries: number
  clock: Clock
  metrics: HotPathMetrics
  /**
   * Reads a verified token's identity, once, when it is verified; the token then carries that
   * identity and not its claims. The whole payload of every remembered token (10,000 by
   * default) was a third of the sidecar's memory (npm run bench, memory budget); nothing on
   * the request path reads more than the identity.
   */
  identityOf?: (claims: KeycloakClaims, token: string) => Identity
}

const NO_CLAIMS: KeycloakClaims = Object.freeze({}) as KeycloakClaims

/**
 * A remembered token: its ready-made outcome, holding the whole token too (the key is only a
 * fingerprint). One object per token, not an entry around an outcome.
 */
interface CacheEntry {
  ok: true
  token: VerifiedToken
  cached: true
  /** The whole token (the cache key is only its tail). */
  presented: string
}

/** Longest bearer token looked at. Keycloak tokens with many roles reach a few kilobytes. */
export const MAX_TOKEN_LENGTH = 16 * 1024

/** RFC 9068 §2.1's header `typ` (media type names are case-insensitive, `application/` optional). */
const AT_JWT = /^(application\/)?at\+jwt$/i

/** Keycloak's `typ` claim on access tokens; ID and refresh tokens carry `ID` and `Refresh`. */
const ACCESS_TOKEN_TYPE = 'Bearer'

/**
 * Validates Keycloak access tokens with jose against the realm's JWKS: algorithm allow-list,
 * exact issuer, this app in `aud` or `azp`, `exp`/`nbf`/`iat` with a clock skew, and Keycloak's
 * `typ: Bearer` (an ID or refresh token is not an access token). A token that passes is
 * remembered, keyed by the token itself, until its `exp`, so repeat calls cost a map lookup;
 * {@link AccessTokenVerifier.forgetKeys} drops those verified with a key that was withdrawn.
 */
export class AccessTokenVerifier {
  readonly #options: VerifierOptions
  readonly #cache: LRUCache<string, CacheEntry> | null
  readonly #clientIds: Set<string>
  readonly #audiences: Set<string>
  /** Bumped by every {@link forgetKeys}: a verification that spans one is not remembered. */
  #forgets = 0

  constructor (options: VerifierOptions) {
    if (options.algorithms.some((a) => a === 'none' || a.startsWith('HS'))) {
      throw new TypeError('AccessTokenVerifier: only asymmetric algorithms may be verified against a JWKS')
    }
    this.#options = options
    this.#clientIds = new Set(options.clientIds)
    this.#audiences = new Set([...options.clientIds, ...options.audiences ?? []])
    this.#cache = options.cacheMaxEntries > 0 ? new LRUCache({ max: options.cacheMaxEntries }) : null
  }

  /** Verifies `token`. Resolves to a value for every input; never throws. */
  async verify (token: string): Promise<VerifyOutcome> {
    const outcome = this.remembered(token) ?? await this.#verify(token)
    if (!(outcome.ok && outcome.cached)) this.#options.metrics.recordVerification(outcome.ok ? 'valid' : outcome.reason)
    return outcome
  }

  /**
   * The outcome for a token verified before and not yet expired, without waiting: most
   * requests carry such a token, and a promise per request is measurable. Null otherwise.
   */
  remembered (token: string): VerifyOutcome | null {
    const entry = this.#cache?.get(cacheKey(token))
    // The key is only a fingerprint: a hit counts only when the whole token is the same.
    if (entry === undefined || entry.presented !== token) return null
    if (this.#options.clock.now() >= entry.token.expiresAt + this.#options.clockSkewSeconds * 1000) return null
    this.#options.metrics.recordVerification('cached')
    return entry
  }

  /** Forgets every remembered token. */
  clear (): void {
    this.#forgets++
    this.#cache?.clear()
  }

  /**
   * Forgets at once every remembered token verified with one of `kids`: the JWKS no longer
   * publishes those keys (issue 9 item 8), so their tokens must not outlive them in the
   * cache. Tokens that named no `kid` go too, as it is unknown which key verified them.
   * Only those: a rotation usually withdraws one key of several, and forgetting everything
   * would re-verify every live token at once for no gain. The walk is over the cache (at most
   * `cacheMaxEntries`) and happens once per withdrawal; a cache hit costs nothing more.
   * Returns how many were forgotten.
   */
  forgetKeys (kids: ReadonlySet<string>): number {
    this.#forgets++
    const cache = this.#cache
    if (cache === null || kids.size === 0) return 0
    const doomed: string[] = []
    for (const [key, entry] of cache.entries()) {
      const kid = entry.token.kid
      if (kid === null || kids.has(kid)) doomed.push(key)
    }
    for (const key of doomed) cache.delete(key)
    return doomed.length
  }

  /** Number of tokens remembered. */
  get cacheSize (): number {
    return this.#cache?.size ?? 0
  }

  async #verify (token: string, retried = false): Promise<VerifyOutcome> {
    const forgets = this.#forgets
    const now = this.#options.clock.now()
    const key = cacheKey(token)
    if (this.#cache?.get(key)?.presented === token) this.#cache.delete(key) // remembered, and expired
    if (token.length > MAX_TOKEN_LENGTH) return { ok: false, reason: 'too_large', detail: `token longer than ${MAX_TOKEN_LENGTH} characters` }

    let result = await this.#verifySignature(token, now)
    if (!result.ok && (result.reason === 'unknown_kid' || result.reason === 'jwks_unavailable')) {
      // A kid we do not know may be a key Keycloak rotated in: one refresh, rate-limited.
      const refreshed = await this.#options.jwks.refreshForUnknownKey(result.reason === 'unknown_kid' ? 'unknown_kid' : 'no_keys')
      if (refreshed) result = await this.#verifySignature(token, this.#options.clock.now())
    }
    if (!result.ok) return result

    const claims = result.token.claims
    if (!result.token.access) {
      return { ok: false, reason: 'wrong_type', detail: `neither header typ at+jwt nor typ claim Bearer (typ claim ${JSON.stringify(claims.typ ?? null)}): not an access token` }
    }
    if (!this.#audienceMatches(claims)) {
      return { ok: false, reason: 'wrong_audience', detail: 'neither aud, azp nor client_id names this client' }
    }
    // Keys were withdrawn while this token was being verified, perhaps the very key: verify
    // again against the keys in use now rather than remember a token of a withdrawn key.
    if (forgets !== this.#forgets && !retried) return this.#verify(token, true)
    // No per-entry ttl: expiry is checked on every hit (remembered()), and lru-cache's own
    // ttl bookkeeping read the clock on every get.
    // Built field by field, not spread: a spread copy gets a hidden class of its own, which
    // was a third of what a remembered token cost.
    const identityOf = this.#options.identityOf
    const { expiresAt, kid, access } = result.token
    const verified: VerifiedToken = identityOf === undefined ? result.token : { claims: NO_CLAIMS, identity: identityOf(claims, token), expiresAt, kid, access }
    if (forgets === this.#forgets) this.#cache?.set(key, { ok: true, token: verified, cached: true, presented: token })
    return { ok: true, token: verified, cached: false }
  }

  async #verifySignature (token: string, now: number): Promise<VerifyOutcome> {
    const keys = this.#options.jwks.keySet()
    if (keys === null) {
      try {
        decodeProtectedHeader(token)
      } catch {
        return { ok: false, reason: 'malformed', detail: 'not a compact JWS' }
      }
      return { ok: false, reason: 'jwks_unavailable', detail: 'no signing keys are known yet' }
    }
    try {
      const { payload, protectedHeader } = await jwtVerify(token, keys, {
        algorithms: [...this.#options.algorithms],
        issuer: this.#options.issuer,
        clockTolerance: this.#options.clockSkewSeconds,
        currentDate: new Date(now),
        requiredClaims: ['exp', 'sub']
      })
      // jose checks `iat` only against a maxTokenAge, which Gatehouse does not set (exp bounds
      // a token's life). A token issued later than now plus the skew comes from an issuer
      // whose clock is wrong, or was minted ahead of time to be used later: refused (RFC 7519
      // §4.1.6 defines iat and leaves its checking to the application). Its own reason, not
      // not_yet_valid: nbf is a validity window the issuer chose, this is a clock fault or a
      // forgery an operator must look at. jose has already checked that `iat`, when present,
      // is a number.
      if (typeof payload.iat === 'number' && payload.iat * 1000 > now + this.#options.clockSkewSeconds * 1000) {
        return { ok: false, reason: 'issued_in_future', detail: 'iat is in the future' }
      }
      // Shared: every token a key signed names it, and ten thousand remembered tokens held as many copies.
      const kid = typeof protectedHeader.kid === 'string' ? internString(protectedHeader.kid) : null
      // An ID token (typ ID) or a refresh token must never pass as an access token: only
      // tokens that say they are one do, by RFC 9068's header or Keycloak's claim.
      const access = (typeof protectedHeader.typ === 'string' && AT_JWT.test(protectedHeader.typ)) || payload.typ === ACCESS_TOKEN_TYPE
      return { ok: true, token: { claims: payload as KeycloakClaims, identity: undefined, expiresAt: (payload.exp as number) * 1000, kid, access }, cached: false }
    } catch (err) {
      return rejectionOf(err)
    }
  }

  // RFC 9068 §4: `aud` must name this resource (a client id or a configured audience); as
  // Keycloak sends its own client in `azp` and RFC 9068 in `client_id`, either counts too.
  #audienceMatches (claims: KeycloakClaims): boolean {
    const aud = claims.aud
    if (typeof aud === 'string' && this.#audiences.has(aud)) return true
    if (Array.isArray(aud) && aud.some((a) => this.#audiences.has(a))) return true
    if (typeof claims.azp === 'string' && this.#clientIds.has(claims.azp)) return true
    return typeof claims.client_id === 'string' && this.#clientIds.has(claims.client_id)
  }
}

/**
 * The cache key of a token: the last 16 characters of its signature (96 bits). Hashing a
 * kilobyte-long token for every lookup was the largest part of a cached check, and a longer
 * tail (64 characters) still cost four times as much to hash as this one; a signature's tail
 * is as unpredictable as the whole. Entries keep the whole token and a hit requires it to be
 * identical, so a forgery that copies a signature gains nothing, and two tokens that share a
 * tail only take turns in one entry.
 */
const KEY_LENGTH = 16

function cacheKey (token: string): string {
  return token.length > KEY_LENGTH ? token.slice(-KEY_LENGTH) : token
}

/** Maps jose's error codes to deny reasons (HOUSE-STYLE §4: outcomes are values). */
function rejectionOf (err: unknown): { ok: false, reason: TokenRejection, detail: string } {
  if (err instanceof joseErrors.JWTExpired) return { ok: false, reason: 'expired', detail: 'exp is in the past' }
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return { ok: false, reason: 'not_yet_valid', detail: 'nbf is in the future' }
    if (err.claim === 'iss') return { ok: false, reason: 'wrong_issuer', detail: 'iss is not the configured issuer' }
    if (err.reason === 'missing') return { ok: false, reason: 'missing_claim', detail: `${err.claim} is missing` }
    return { ok: false, reason: 'malformed', detail: `${err.claim} is invalid` }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return { ok: false, reason: 'alg_not_allowed', detail: 'alg is not allowed' }
  if (err instanceof joseErrors.JWKSNoMatchingKey) return { ok: false, reason: 'unknown_kid', detail: 'no known key matches the token' }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return { ok: false, reason: 'invalid_signature', detail: 'signature does not verify' }
  if (err instanceof joseErrors.JOSENotSupported) return { ok: false, reason: 'alg_not_allowed', detail: 'alg or header is not supported' }
  return { ok: false, reason: 'malformed', detail: 'token is not a well-formed JWT' }
}
