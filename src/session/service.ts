import { randomBytes, randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import { frozenIdentity, type Identity } from '../identity.ts'
import { identityFromClaims, type ClaimsReader } from '../keycloak/claims.ts'
import type { KeycloakPool } from '../keycloak/failover.ts'
import type { OidcClient, TokenSet } from '../keycloak/oidc.ts'
import { sha256 } from '../store/crypto.ts'
import type { SessionStore } from '../store/session-store.ts'
import type { SessionMatch, SessionMode, SessionRecord } from '../store/sessions.ts'
import type { CachedTokens } from '../store/token-cache.ts'
import { localLoginAllowed } from './local-allow.ts'

/** A session's identity without the per-request parts. */
export type StoredIdentity = SessionRecord['identity']

/** What starting a session takes. */
export interface NewSession {
  username: string
  subject: string | null
  mode: SessionMode
  identity: StoredIdentity
  tokens: TokenSet | null
  localBasis: boolean
  ip: string | null
  userAgent: string | null
}

/** How a refresh ended. */
export type RefreshResult =
  /** New tokens. */
  | 'success'
  /** Keycloak said the grant is over (final). */
  | 'invalid_grant'
  /** Any other 4xx (final, as invalid_grant). */
  | 'rejected'
  /** Network failure, timeout, 5xx or open circuit: the cached tokens carry on. */
  | 'unavailable'
  /** Keycloak's answer failed our checks (not a 4xx): the cached tokens carry on. */
  | 'failed'
  | 'no_refresh_token'

/** Metrics the session service moves. */
export interface SessionMetrics {
  tokenRefresh: { inc: (labels: { result: RefreshResult }) => void }
}

/** What {@link SessionService} needs. */
export interface SessionServiceDeps {
  config: Config
  /** Where sessions, their tokens, revocations, lockout counters and refresh locks are kept. */
  store: SessionStore
  clock: Clock
  log: Logger
  metrics: SessionMetrics
  /** Keycloak, for refreshes; absent (the CLI) nothing is refreshed. */
  pool?: KeycloakPool
  oidc?: OidcClient
  /** How claims become an identity. */
  claims?: ClaimsReader
}

interface Entry {
  record: SessionRecord
  tokens: CachedTokens | null
  /**
   * The identity last handed out, reused while the mode and token expiry it was made for
   * hold (kept as fields of the entry, not an object of their own: one fewer per session).
   */
  view: Identity | null
  viewMode: SessionMode | null
  viewAccessExpiresAt: number
}

// How long a session read from the store is kept in memory. A session ended elsewhere (the
// CLI, another process on the same file, another replica) is noticed at once, by the store's
// revocation notices, not by this: this bounds how stale a mode or identity change made
// elsewhere can be.
const CACHE_TTL_MS = 5_000
const REFRESH_BATCH = 50
// Waiting for another holder of a session's refresh lock: first and longest pause, in ms.
const LOCK_WAIT_FIRST_MS = 5
const LOCK_WAIT_MAX_MS = 50

/**
 * Browser sessions (DESIGN §2): a random 256-bit secret in the cookie, its SHA-256 in the
 * session store, an LRU in front. Each request's identity comes from the session's Keycloak
 * tokens while they are fresh (mode `keycloak`), from what was cached while Keycloak is
 * unreachable and the grace period lasts (mode `cached`), or from the local login (mode
 * `local`). Refreshes are single-flight per session, in this process and, through the store's
 * refresh lock, across processes and replicas: a rotated refresh token is never sent twice.
 */
export class SessionService {
  readonly #deps: SessionServiceDeps
  readonly #store: SessionStore
  readonly #cache: LRUCache<string, Entry> | null
  readonly #keyOf = new Map<string, string>()
  readonly #touches = new Map<string, number>()
  readonly #inflight = new Map<string, Promise<RefreshResult>>()
  readonly #reading = new Map<string, Promise<Entry | null>>()
  #revocationsSeen = 0
  readonly #idleMs: number
  readonly #absoluteMs: number
  readonly #graceMs: number
  readonly #lockTtlMs: number
  readonly #unsubscribe: () => void
  #timer: NodeJS.Timeout | null = null
  #tick: Promise<void> | null = null

  constructor (deps: SessionServiceDeps) {
    this.#deps = deps
    this.#store = deps.store
    const s = deps.config.session
    this.#idleMs = s.idle_timeout_minutes * 60_000
    this.#absoluteMs = s.absolute_timeout_hours * 3_600_000
    this.#graceMs = deps.config.keycloak.resilience.token_grace_period_hours * 3_600_000
    // Long enough for a refresh through every server in turn; a holder that dies frees it then.
    this.#lockTtlMs = Math.max(5_000, 3 * deps.config.keycloak.timeout_ms)
    this.#cache = s.cache_max_entries === 0
      ? null
      : new LRUCache<string, Entry>({
        max: s.cache_max_entries,
        ttl: CACHE_TTL_MS,
        dispose: (entry) => { this.#keyOf.delete(entry.record.id) }
      })
    this.#unsubscribe = this.#store.onRevoked((ids) => {
      this.#revocationsSeen++
      if (ids === null) this.#cache?.clear()
      else for (const id of ids) this.#forget(id)
    })
  }

  /** The session store behind this service. */
  get store (): SessionStore {
    return this.#store
  }

  /** Starts a session; returns its secret (for the cookie, never stored) and record. */
  async create (input: NewSession): Promise<{ secret: string, record: SessionRecord }> {
    const now = this.#deps.clock.now()
    const secret = randomBytes(32).toString('base64url')
    const record: SessionRecord = {
      id: randomUUID(),
      username: input.username,
      subject: input.subject,
      mode: input.mode,
      keycloakSid: input.tokens?.sid ?? null,
      identity: input.identity,
      ip: input.ip,
      userAgent: input.userAgent?.slice(0, 512) ?? null,
      createdAt: now,
      lastSeenAt: now,
      expiresAt: now + this.#absoluteMs,
      endedAt: null,
      endReason: null,
      localBasis: input.localBasis
    }
    await this.#store.insert(record, sha256(secret), input.tokens === null ? null : cachedTokensOf(record, input.tokens, now))
    return { secret, record }
  }

  /**
   * The identity a session secret stands for right now, or null (unknown, ended, expired, or
   * its Keycloak part gone with nothing to fall back on). May refresh the session's tokens
   * when Keycloak is reachable; never waits on it otherwise.
   */
  async identify (secret: string): Promise<{ identity: Identity, session: SessionRecord } | null> {
    const entry = this.#cached(secret) ?? await this.#read(secret)
    if (entry === null) return null
    const now = this.#deps.clock.now()
    const record = entry.record
    if (record.expiresAt <= now) return await this.#expire(record, 'expired')
    if (record.lastSeenAt + this.#idleMs <= now) return await this.#expire(record, 'idle')
    record.lastSeenAt = now
    this.#touches.set(record.id, now)
    const identity = await this.#current(entry, now)
    return identity === null ? null : { identity, session: entry.record }
  }

  /** The live session of a secret without touching it (logout, password change). */
  async peek (secret: string): Promise<{ record: SessionRecord, tokens: CachedTokens | null } | null> {
    const entry = this.#cached(secret) ?? await this.#read(secret)
    return entry === null ? null : { record: entry.record, tokens: entry.tokens }
  }

  // The hot path: an LRU hit, after the store's cheap look for revocations made elsewhere.
  #cached (secret: string): Entry | undefined {
    if (this.#cache === null) return undefined
    this.#store.pollRevocations()
    return this.#cache.get(sha256(secret).toString('base64'))
  }

  // One read per secret at a time: when an entry ages out under load, the requests that find
  // it gone share one store read instead of each making their own (with Redis: one round trip
  // per session per CACHE_TTL_MS, not one per request in flight).
  #read (secret: string): Promise<Entry | null> {
    const hash = sha256(secret)
    const key = hash.toString('base64')
    let pending = this.#reading.get(key)
    if (pending === undefined) {
      pending = this.#readStore(hash, key).finally(() => this.#reading.delete(key))
      this.#reading.set(key, pending)
    }
    return pending
  }

  async #readStore (hash: Buffer, key: string): Promise<Entry | null> {
    const generation = this.#revocationsSeen
    const found = await this.#store.findLive(hash)
    if (found === null) return null
    const record = found.record
    // A touch not yet written is newer than the row.
    record.lastSeenAt = Math.max(record.lastSeenAt, this.#touches.get(record.id) ?? 0)
    const entry: Entry = { record, tokens: found.tokens, view: null, viewMode: null, viewAccessExpiresAt: 0 }
    // A revocation heard while this read was out may be of this very session: not remembered.
    if (this.#cache !== null && generation === this.#revocationsSeen) {
      this.#cache.set(key, entry)
      this.#keyOf.set(record.id, key)
    }
    return entry
  }

  async #current (entry: Entry, now: number): Promise<Identity | null> {
    const tokens = entry.tokens
    if (tokens !== null && tokens.accessExpiresAt <= now) {
      if (tokens.refreshToken !== null && this.#deps.pool?.reachable() === true) {
        const result = await this.refresh(entry.record.id, tokens)
        if (result === 'success' || result === 'invalid_grant' || result === 'rejected') {
          // Re-read: the refresh wrote new tokens, or ended the session or its Keycloak part.
          // Once only: a token that looks expired straight after a refresh is not refreshed again.
          const stored = await this.#store.find(entry.record.id)
          if (stored === null || stored.record.endedAt !== null) return null
          entry.record = { ...stored.record, lastSeenAt: Math.max(stored.record.lastSeenAt, this.#touches.get(stored.record.id) ?? 0) }
          entry.tokens = stored.tokens
          entry.view = null
          return this.#view(entry)
        }
      }
      if (entry.record.endedAt !== null) return null
      if (entry.tokens !== null) return await this.#offline(entry, entry.tokens, now)
    }
    return this.#view(entry)
  }

  // Keycloak unreachable, or its answer unusable, with an expired access token: the grace period decides.
  async #offline (entry: Entry, tokens: CachedTokens, now: number): Promise<Identity | null> {
    const { config } = this.#deps
    const record = entry.record
    if (config.keycloak.resilience.allow_offline_mode && now < tokens.cachedAt + this.#graceMs) {
      if (record.mode !== 'cached') await this.#setMode(entry, 'cached', undefined)
      return this.#view(entry)
    }
    const local = config.session.after_grace === 'local' && localLoginAllowed(config.local_auth.allow, record.identity.roles)
    this.#deps.log.info({ session: record.id, user: record.username, to: local ? 'local' : 'login' }, 'cached tokens passed the grace period')
    if (!local) return await this.#expire(record, 'grace_expired')
    await this.#setMode(entry, 'local', null)
    return this.#view(entry)
  }

  #view (entry: Entry): Identity {
    const { record, tokens } = entry
    const live = record.mode === 'keycloak' && tokens !== null
    const accessExpiresAt = live ? tokens.accessExpiresAt : 0
    const view = entry.view
    if (view !== null && entry.viewMode === record.mode && entry.viewAccessExpiresAt === accessExpiresAt) return view
    // frozenIdentity copies the fields in its own order: the spread is only its input.
    const identity = frozenIdentity({
      ...record.identity,
      authMode: record.mode,
      accessToken: live ? tokens.accessToken : null,
      expiresAt: live ? tokens.accessExpiresAt : record.expiresAt
    })
    entry.view = identity
    entry.viewMode = record.mode
    entry.viewAccessExpiresAt = accessExpiresAt
    return identity
  }

  /**
   * Refreshes a session's tokens, once at a time per session: concurrent callers in this
   * process share the one request, and other processes wait on the store's refresh lock, then
   * use what its holder stored; so the refresh token (which Keycloak may rotate) is sent once.
   * `seen` is the token set the caller found expired: when the stored one is newer, someone
   * else refreshed and it is used as it is.
   */
  refresh (sessionId: string, seen?: CachedTokens): Promise<RefreshResult> {
    let pending = this.#inflight.get(sessionId)
    if (pending === undefined) {
      pending = this.#locked(sessionId, seen).finally(() => this.#inflight.delete(sessionId))
      this.#inflight.set(sessionId, pending)
    }
    return pending
  }

  async #locked (sessionId: string, seen: CachedTokens | undefined): Promise<RefreshResult> {
    // Real time, not the injected clock: this waits on another process's network call.
    const deadline = performance.now() + this.#lockTtlMs
    let pause = LOCK_WAIT_FIRST_MS
    for (;;) {
      const lease = await this.#store.lockRefresh(sessionId, this.#lockTtlMs)
      if (lease === 'unavailable') return this.#count('unavailable')
      if (lease !== 'held') {
        try {
          return await this.#refresh(sessionId, seen, lease.fence)
        } finally {
          await lease.release()
        }
      }
      // Another process or replica is refreshing this session: wait for it, then use what it stored.
      if (performance.now() >= deadline) return this.#count('unavailable')
      await new Promise((resolve) => setTimeout(resolve, pause).unref())
      pause = Math.min(pause * 2, LOCK_WAIT_MAX_MS)
    }
  }

  async #refresh (sessionId: string, seen: CachedTokens | undefined, fence?: number): Promise<RefreshResult> {
    const deps = this.#deps
    const { oidc, claims } = deps
    // Read from the store, not memory: the last refresh token written is the only one still good.
    const stored = await this.#store.find(sessionId)
    const tokens = stored?.tokens ?? null
    const record = stored?.record ?? null
    if (oidc === undefined || claims === undefined || tokens?.refreshToken == null || record === null || record.endedAt !== null) return this.#count('no_refresh_token')
    const now = deps.clock.now()
    // Refreshed by someone else since the caller looked (or so lately that nobody would refresh
    // now): use those tokens; sending this refresh token again could be a rotated one's replay.
    if ((seen !== undefined && tokens.cachedAt > seen.cachedAt) || tokens.accessExpiresAt > now + deps.config.session.refresh_window_seconds * 1000) {
      this.#adopt(sessionId, record, tokens)
      return 'success'
    }
    let fresh: TokenSet
    try {
      fresh = await oidc.refresh(tokens.refreshToken)
    } catch (err) {
      // Any 4xx is Keycloak's answer that this grant is over (invalid_grant, invalid_client, a
      // disabled client, a body that is not even JSON): final, never an outage that earns the
      // grace period, or a user logged out at Keycloak keeps access for a day. Network failures,
      // 5xx and answers that failed our checks keep the tokens (RFC 6749 §5.2).
      if (err instanceof KeycloakRejected && err.status >= 400 && err.status < 500) {
        if (err.oauthError !== 'invalid_grant') deps.log.warn({ session: sessionId, status: err.status, reason: err.message }, 'token refresh refused; ending the session\'s keycloak part')
        await this.#keycloakPartEnded(record)
        return this.#count(err.oauthError === 'invalid_grant' ? 'invalid_grant' : 'rejected')
      }
      const unavailable = err instanceof KeycloakUnavailable
      deps.log.warn({ session: sessionId, err: unavailable ? undefined : err, reason: (err as Error).message }, unavailable ? 'token refresh deferred: keycloak unreachable' : 'token refresh failed; keeping the cached tokens')
      return this.#count(unavailable ? 'unavailable' : 'failed')
    }
    const at = deps.clock.now()
    const next = cachedTokensOf(record, fresh, at)
    // Keycloak may not rotate the refresh token: the old one stays good then.
    if (next.refreshToken === null) next.refreshToken = tokens.refreshToken
    if (next.idToken === null) next.idToken = tokens.idToken
    next.refreshedAt = at
    const identity = storedIdentityOf(fresh, claims)
    const sid = fresh.sid ?? record.keycloakSid
    const written = await this.#store.update(sessionId, { mode: 'keycloak', identity, subject: record.subject ?? subjectOf(fresh), keycloakSid: sid, tokens: next }, fence)
    if (!written) {
      deps.log.warn({ session: sessionId }, 'refreshed tokens not stored: the session ended, or a later refresh lock wrote first')
      return this.#count('failed')
    }
    this.#adopt(sessionId, { ...record, mode: 'keycloak', identity, keycloakSid: sid }, next)
    return this.#count('success')
  }

  #adopt (sessionId: string, record: SessionRecord, tokens: CachedTokens): void {
    const entry = this.#entryOf(sessionId)
    if (entry === null) return
    entry.tokens = tokens
    entry.record = { ...entry.record, mode: record.mode, identity: record.identity, keycloakSid: record.keycloakSid }
    entry.view = null
  }

  // Keycloak ended the grant (any 4xx on refresh):
  // a person who proved a local password goes on locally, anyone else logs in again.
  async #keycloakPartEnded (record: SessionRecord): Promise<void> {
    const canStayLocal = record.localBasis && localLoginAllowed(this.#deps.config.local_auth.allow, record.identity.roles)
    this.#deps.log.info({ session: record.id, user: record.username, to: canStayLocal ? 'local' : 'ended' }, 'keycloak ended the session\'s tokens')
    if (!canStayLocal) {
      await this.end(record.id, 'keycloak_session_ended')
      return
    }
    await this.#store.update(record.id, { mode: 'local', identity: record.identity, subject: record.subject, keycloakSid: null, tokens: null })
    const entry = this.#entryOf(record.id)
    if (entry !== null) {
      entry.tokens = null
      entry.record = { ...entry.record, mode: 'local', keycloakSid: null }
      entry.view = null
    }
  }

  #count (result: RefreshResult): RefreshResult {
    this.#deps.metrics.tokenRefresh.inc({ result })
    return result
  }

  #entryOf (sessionId: string): Entry | null {
    const key = this.#keyOf.get(sessionId)
    return key === undefined ? null : this.#cache?.peek(key) ?? null
  }

  // `tokens`: null drops them (a fall to local), undefined keeps them.
  async #setMode (entry: Entry, mode: SessionMode, tokens: null | undefined): Promise<void> {
    const { record } = entry
    await this.#store.update(record.id, { mode, identity: record.identity, subject: record.subject, keycloakSid: record.keycloakSid, ...(tokens === null ? { tokens: null } : {}) })
    entry.record = { ...entry.record, mode }
    if (tokens === null) entry.tokens = null
    entry.view = null
  }

  async #expire (record: SessionRecord, reason: string): Promise<null> {
    await this.end(record.id, reason)
    return null
  }

  /** Ends one session and forgets its tokens, on every replica. Returns whether it was live. */
  async end (sessionId: string, reason: string): Promise<boolean> {
    this.#forget(sessionId)
    const ended = await this.#store.end(sessionId, reason, this.#deps.clock.now())
    this.#forget(sessionId)
    return ended
  }

  /** Ends every live session matching a Keycloak session id, subject or user name, but `except`; returns them. */
  async endWhere (match: SessionMatch, reason: string, except?: string): Promise<string[]> {
    const ids = await this.#store.endWhere(match, reason, this.#deps.clock.now(), except)
    for (const id of ids) this.#forget(id)
    return ids
  }

  #forget (sessionId: string): void {
    this.#touches.delete(sessionId)
    // A request holding this entry right now (waiting on a refresh) must see it ended too.
    const entry = this.#entryOf(sessionId)
    if (entry !== null) {
      entry.record = { ...entry.record, endedAt: this.#deps.clock.now() }
      entry.tokens = null
      entry.view = null
    }
    const key = this.#keyOf.get(sessionId)
    if (key !== undefined) this.#cache?.delete(key)
  }

  /** Writes the batched last-seen times (sliding renewal): one write, not one per request. */
  async flushTouches (): Promise<void> {
    if (this.#touches.size === 0) return
    const batch = new Map(this.#touches)
    this.#touches.clear()
    await this.#store.touch(batch)
  }

  /** Refreshes, one session at a time, the tokens expiring within the refresh window. */
  async refreshDue (): Promise<number> {
    const windowMs = this.#deps.config.session.refresh_window_seconds * 1000
    let refreshed = 0
    for (const id of await this.#store.refreshCandidates(this.#deps.clock.now() + windowMs, REFRESH_BATCH)) {
      if (this.#deps.pool?.reachable() !== true) break
      // The tokens as found now: another replica's loop may refresh this session first (its
      // lock comes first), and then these are older than what it stored.
      const seen = (await this.#store.find(id))?.tokens
      if (seen == null) continue
      if (await this.refresh(id, seen) === 'success') refreshed++
    }
    return refreshed
  }

  /** Ends sessions past their lifetimes and removes tokens past their grace. */
  async sweep (): Promise<{ expired: number, tokensRemoved: number }> {
    const now = this.#deps.clock.now()
    await this.flushTouches()
    const expired = await this.#store.expire(now, this.#idleMs)
    const tokensRemoved = await this.#store.cleanupTokens(now, this.#graceMs)
    if (expired > 0) this.#cache?.clear()
    return { expired, tokensRemoved }
  }

  /** Live sessions by mode. */
  async countByMode (): Promise<Record<SessionMode, number>> {
    return await this.#store.countByMode(this.#deps.clock.now())
  }

  /** Session token sets still usable: fresh, or inside the grace period. */
  async countUsableTokens (): Promise<number> {
    return await this.#store.countUsableTokens(this.#deps.clock.now(), this.#graceMs)
  }

  /** Sessions, newest first (the CLI's `sessions list`). */
  async list (options: { username?: string, includeEnded?: boolean } = {}): Promise<SessionRecord[]> {
    return await this.#store.list(options)
  }

  /** A session by id, ended or not. */
  async find (sessionId: string): Promise<SessionRecord | null> {
    return (await this.#store.find(sessionId))?.record ?? null
  }

  /** Ends sessions past their idle or absolute lifetime; returns how many (`sessions cleanup`). */
  async expire (): Promise<number> {
    const expired = await this.#store.expire(this.#deps.clock.now(), this.#idleMs)
    if (expired > 0) this.#cache?.clear()
    return expired
  }

  /** Deletes sessions ended more than `olderThanMs` ago; returns how many. */
  async purge (olderThanMs: number): Promise<number> {
    return await this.#store.purge(this.#deps.clock.now(), olderThanMs)
  }

  /** Removes token sets past the grace period or of ended sessions; returns how many. */
  async cleanupTokens (): Promise<number> {
    return await this.#store.cleanupTokens(this.#deps.clock.now(), this.#graceMs)
  }

  /** Background work every `session.touch_interval_seconds`: touches, refreshes, sweep. */
  start (): void {
    if (this.#timer !== null) return
    this.#timer = setInterval(() => {
      if (this.#tick !== null) return
      this.#tick = this.#background().finally(() => { this.#tick = null })
    }, this.#deps.config.session.touch_interval_seconds * 1000)
    this.#timer.unref()
  }

  async #background (): Promise<void> {
    try {
      await this.sweep()
      await this.refreshDue()
    } catch (err) {
      this.#deps.log.error({ err }, 'session background work failed')
    }
  }

  /** Stops the background work and writes what is pending. */
  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.#tick
    await Promise.allSettled(this.#inflight.values())
    await this.flushTouches()
    this.#unsubscribe()
  }
}

/** The provider's `sub` for the person a token set is for (access token, else ID token), or null. */
export function subjectOf (tokens: TokenSet): string | null {
  const sub = tokens.claims.sub ?? tokens.idClaims?.sub
  return typeof sub === 'string' && sub !== '' ? sub : null
}

/** The identity a token set vouches for, as a session stores it. */
export function storedIdentityOf (tokens: TokenSet, reader: ClaimsReader): StoredIdentity {
  // The access token decides (its roles are what bearer calls see too); the ID token and
  // userinfo fill in what it lacks: many providers keep names and e-mail out of access tokens.
  const merged: Record<string, unknown> = { ...tokens.userinfo, ...tokens.idClaims }
  for (const [name, value] of Object.entries(tokens.claims)) if (value !== undefined) merged[name] = value
  const { user, preferredUsername, email, emailVerified, groups, roles } = identityFromClaims(merged, reader, null)
  return { user, preferredUsername, email, emailVerified, groups, roles }
}

function cachedTokensOf (record: SessionRecord, tokens: TokenSet, now: number): CachedTokens {
  return {
    sessionId: record.id,
    username: record.username,
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    idToken: tokens.idToken,
    accessExpiresAt: tokens.accessExpiresAt,
    refreshExpiresAt: tokens.refreshExpiresAt,
    cachedAt: now,
    refreshedAt: null
  }
}
