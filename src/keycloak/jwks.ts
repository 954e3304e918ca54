import { createLocalJWKSet, type JSONWebKeySet, type JWK } from 'jose'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { KeycloakUnavailable } from '../errors.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { JwksCacheRepository } from '../store/jwks-cache.ts'
import type { KeycloakPool } from './failover.ts'
import { keycloakFetch, readJson } from './http.ts'

/** A key resolver jose's `jwtVerify` accepts. */
export type KeyResolver = ReturnType<typeof createLocalJWKSet>

/** Options for {@link JwksManager}. */
export interface JwksOptions {
  /** The realm's public issuer: the row key in `jwks_cache`. */
  issuer: string
  repository: JwksCacheRepository
  pool: KeycloakPool
  clock: Clock
  log: Logger
  metrics: Metrics
  /** Background refresh period, in milliseconds. */
  refreshIntervalMs: number
  /** Unknown-kid refreshes are at most one per this many milliseconds. */
  minRefreshIntervalMs: number
  /** The JWKS URL as the provider publishes it (discovery's `jwks_uri`), read first when not yet known. */
  jwksUri: () => Promise<string>
}

/** Why a refresh was asked for (log context only). */
export type RefreshReason = 'startup' | 'interval' | 'unknown_kid' | 'no_keys' | 'manual'

/**
 * Told the key ids that a newly installed JWKS no longer publishes, or publishes with other
 * key material; called synchronously, after the new keys are in use.
 */
export type KeysWithdrawnListener = (kids: ReadonlySet<string>) => void

/**
 * The realm's signing keys. Loaded from SQLite at start so tokens validate while Keycloak is
 * unreachable (oauth2-proxy refuses to start then: its issue #3487); refreshed in the
 * background and when a token names a key id we do not have, at most once per
 * `minRefreshIntervalMs`, and always through the pool's deadline. A failed refresh keeps the
 * last good keys.
 */
export class JwksManager {
  readonly #options: JwksOptions
  #resolver: KeyResolver | null = null
  #keyIds = new Set<string>()
  /** Each key in use by kid, serialised: a kid whose key changes counts as withdrawn. */
  #keysByKid = new Map<string, string>()
  readonly #withdrawnListeners: KeysWithdrawnListener[] = []
  #fetchedAt: number | null = null
  #source: string | null = null
  #inflight: Promise<boolean> | null = null
  #lastAttemptAt = Number.NEGATIVE_INFINITY
  #timer: NodeJS.Timeout | null = null

  constructor (options: JwksOptions) {
    this.#options = options
  }

  /** Loads the stored keys, synchronously: no network. Returns whether there were any. */
  load (): boolean {
    const stored = this.#options.repository.load(this.#options.issuer)
    if (stored === null) return false
    this.#install(stored.jwks, stored.fetchedAt, stored.server)
    return true
  }

  /**
   * Loads the stored keys (synchronously: no network) and starts background refreshes.
   * Resolves (never rejects) when the first refresh has ended, whatever its outcome.
   */
  start (): Promise<boolean> {
    if (this.load()) {
      this.#options.log.info({ keys: this.#keyIds.size, fetched_at: new Date(this.#fetchedAt ?? 0).toISOString() }, 'jwks loaded from store')
    } else {
      this.#options.log.warn('no stored jwks: tokens cannot be validated until keycloak answers')
    }
    this.#timer = setInterval(() => { void this.refresh('interval') }, this.#options.refreshIntervalMs)
    this.#timer.unref()
    return this.refresh('startup')
  }

  /**
   * Calls `listener` whenever installed keys drop key ids that were in use (Keycloak withdrew
   * them), so what was verified with them can be forgotten at once (issue 9 item 8).
   */
  onKeysWithdrawn (listener: KeysWithdrawnListener): void {
    this.#withdrawnListeners.push(listener)
  }

  /** Stops background refreshes. */
  stop (): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  /** The resolver for the keys in use, or null when there are none yet. */
  keySet (): KeyResolver | null {
    return this.#resolver
  }

  /** Key ids in use. */
  keyIds (): string[] {
    return [...this.#keyIds]
  }

  /** Seconds since the keys in use were fetched, or null when there are none. */
  ageSeconds (): number | null {
    return this.#fetchedAt === null ? null : Math.max(0, (this.#options.clock.now() - this.#fetchedAt) / 1000)
  }

  /** When the keys in use were fetched (ms since the epoch), or null. */
  get fetchedAt (): number | null {
    return this.#fetchedAt
  }

  /** Server the keys in use came from. */
  get source (): string | null {
    return this.#source
  }

  /**
   * Asks for a refresh because a token named a key we do not have (or we have none).
   * Resolves true when new keys were installed; false without any I/O while the last attempt
   * is younger than the minimum interval.
   */
  async refreshForUnknownKey (reason: 'unknown_kid' | 'no_keys'): Promise<boolean> {
    if (this.#inflight !== null) return this.#inflight
    if (this.#options.clock.now() - this.#lastAttemptAt < this.#options.minRefreshIntervalMs) return false
    return this.refresh(reason)
  }

  /** Fetches the JWKS now, single-flight. Resolves true when new keys were installed. */
  refresh (reason: RefreshReason): Promise<boolean> {
    this.#inflight ??= this.#fetch(reason).finally(() => { this.#inflight = null })
    return this.#inflight
  }

  async #fetch (reason: RefreshReason): Promise<boolean> {
    const { pool, log, metrics, clock } = this.#options
    this.#lastAttemptAt = clock.now()
    try {
      const published = await this.#options.jwksUri()
      const { jwks, server } = await pool.call('jwks', async (target) => {
        const response = await keycloakFetch(target.backChannel(published), { headers: { accept: 'application/json' } }, target)
        return { jwks: usableKeys(await readJson(response, target), target.server), server: target.server }
      })
      const fetchedAt = clock.now()
      this.#install(jwks, fetchedAt, server)
      this.#options.repository.save(this.#options.issuer, { jwks, fetchedAt, server })
      metrics.jwksRefresh.inc({ result: 'success' })
      log.debug({ reason, server, keys: jwks.keys.length }, 'jwks refreshed')
      return true
    } catch (err) {
      metrics.jwksRefresh.inc({ result: 'failure' })
      const kind = err instanceof KeycloakUnavailable ? err.kind : 'error'
      // A refresh that was never attempted (circuit open, disabled) is not news.
      const level = kind === 'circuit_open' || kind === 'disabled' ? 'debug' : 'warn'
      log[level]({ reason, kind, err: (err as Error).message }, 'jwks refresh failed; keeping the last good keys')
      return false
    }
  }

  #install (jwks: JSONWebKeySet, fetchedAt: number, server: string | null): void {
    const keysByKid = new Map<string, string>()
    for (const key of jwks.keys) if (typeof key.kid === 'string') keysByKid.set(key.kid, JSON.stringify(key))
    const withdrawn = new Set<string>()
    for (const [kid, key] of this.#keysByKid) if (keysByKid.get(kid) !== key) withdrawn.add(kid)
    this.#resolver = createLocalJWKSet(jwks)
    this.#keyIds = new Set(keysByKid.keys())
    this.#keysByKid = keysByKid
    this.#fetchedAt = fetchedAt
    this.#source = server
    if (withdrawn.size === 0) return
    this.#options.log.info({ kids: [...withdrawn], server }, 'jwks keys withdrawn')
    for (const listener of this.#withdrawnListeners) listener(withdrawn)
  }
}

const SIGNING_KEY_TYPES = new Set(['RSA', 'EC', 'OKP'])

/**
 * Keeps the public signing keys of a JWKS answer: Keycloak also publishes encryption keys
 * (`use: enc`, RSA-OAEP) in `/certs`. An answer without one usable key is refused, so a
 * broken answer never replaces good keys.
 */
export function usableKeys (body: unknown, server: string): JSONWebKeySet {
  const keys = (body as { keys?: unknown } | null)?.keys
  if (!Array.isArray(keys)) throw new KeycloakUnavailable('bad_response', 'keycloak certs answer has no keys array', { server })
  const usable = keys.filter((k): k is JWK => {
    if (k === null || typeof k !== 'object') return false
    const key = k as JWK
    return typeof key.kty === 'string' && SIGNING_KEY_TYPES.has(key.kty) &&
      (key.use === undefined || key.use === 'sig') && key.d === undefined && typeof key.kid === 'string'
  })
  if (usable.length === 0) throw new KeycloakUnavailable('bad_response', 'keycloak certs answer has no usable signing key', { server })
  return { keys: usable }
}
