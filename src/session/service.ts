import { randomBytes, randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import type { Identity } from '../identity.ts'
import { identityFromClaims, type ClaimsReader } from '../keycloak/claims.ts'
import type { KeycloakPool } from '../keycloak/failover.ts'
import type { OidcClient, TokenSet } from '../keycloak/oidc.ts'
import { sha256 } from '../store/crypto.ts'
import type { Db } from '../store/db.ts'
import { SessionsRepository, type SessionMatch, type SessionMode, type SessionRecord } from '../store/sessions.ts'
import { TokenCacheRepository, type CachedTokens } from '../store/token-cache.ts'
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
  db: Db
  tokens: TokenCacheRepository
  pool: KeycloakPool
  oidc: OidcClient
  clock: Clock
  log: Logger
  metrics: SessionMetrics
  /** How claims become an identity. */
  claims: ClaimsReader
}

interface Entry {
  record: SessionRecord
  tokens: CachedTokens | null
  /** The identity last handed out, reused while nothing it depends on changed. */
  view: { key: string, identity: Identity } | null
}

// How long a session read from SQLite is kept in memory. A session ended elsewhere (the CLI,
// another process on the same file) is noticed at once, by the revocation counter, not by this.
const CACHE_TTL_MS = 5_000
const REFRESH_BATCH = 50

/**
 * Browser sessions (DESIGN §2): a random 256-bit secret in the cookie, its SHA-256 in
 * SQLite, an LRU in front. Each request's identity comes from the session's Keycloak tokens
 * while they are fresh (mode `keycloak`), from what was cached while Keycloak is unreachable
 * and the grace period lasts (mode `cached`), or from the local login (mode `local`).
 * Refreshes are single-flight per session: a rotated refresh token is never sent twice.
 */
export class SessionService {
  readonly #deps: SessionServiceDeps
  readonly #repo: SessionsRepository
  readonly #cache: LRUCache<string, Entry> | null
  readonly #keyOf = new Map<string, string>()
  readonly #touches = new Map<string, number>()
  readonly #inflight = new Map<string, Promise<RefreshResult>>()
  readonly #idleMs: number
  readonly #absoluteMs: number
  readonly #graceMs: number
  #timer: NodeJS.Timeout | null = null
  #tick: Promise<void> | null = null
  #seenDataVersion = -1
  #seenRevocations = -1

  constructor (deps: SessionServiceDeps) {
    this.#deps = deps
    this.#repo = new SessionsRepository(deps.db)
    const s = deps.config.session
    this.#idleMs = s.idle_timeout_minutes * 60_000
    this.#absoluteMs = s.absolute_timeout_hours * 3_600_000
    this.#graceMs = deps.config.keycloak.resilience.token_grace_period_hours * 3_600_000
    this.#cache = s.cache_max_entries === 0
      ? null
      : new LRUCache<string, Entry>({
        max: s.cache_max_entries,
        ttl: CACHE_TTL_MS,
        dispose: (entry) => { this.#keyOf.delete(entry.record.id) }
      })
  }

  /** The sessions table, for the routes and the CLI's reports. */
  get repository (): SessionsRepository {
    return this.#repo
  }

  /** Starts a session; returns its secret (for the cookie, never stored) and record. */
  create (input: NewSession): { secret: string, record: SessionRecord } {
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
    this.#deps.db.transaction(() => {
      this.#repo.insert(record, sha256(secret))
      if (input.tokens !== null) this.#deps.tokens.put(cachedTokensOf(record, input.tokens, now))
    })()
    return { secret, record }
  }

  /**
   * The identity a session secret stands for right now, or null (unknown, ended, expired, or
   * its Keycloak part gone with nothing to fall back on). May refresh the session's tokens
   * when Keycloak is reachable; never waits on it otherwise.
   */
  async identify (secret: string): Promise<{ identity: Identity, session: SessionRecord } | null> {
    const entry = this.#load(secret)
    if (entry === null) return null
    const now = this.#deps.clock.now()
    const record = entry.record
    if (record.expiresAt <= now) return this.#expire(record, 'expired')
    if (record.lastSeenAt + this.#idleMs <= now) return this.#expire(record, 'idle')
    record.lastSeenAt = now
    this.#touches.set(record.id, now)
    const identity = await this.#current(entry, now)
    return identity === null ? null : { identity, session: entry.record }
  }

  /** The live session of a secret without touching it (logout, password change). */
  peek (secret: string): { record: SessionRecord, tokens: CachedTokens | null } | null {
    const entry = this.#load(secret)
    return entry === null ? null : { record: entry.record, tokens: entry.tokens }
  }

  #load (secret: string): Entry | null {
    this.#noticeRevocations()
    const hash = sha256(secret)
    const key = hash.toString('base64')
    const cached = this.#cache?.get(key)
    if (cached !== undefined) return cached
    const record = this.#repo.findLiveByHash(hash)
    if (record === null) return null
    // A touch not yet written is newer than the row.
    record.lastSeenAt = Math.max(record.lastSeenAt, this.#touches.get(record.id) ?? 0)
    const entry: Entry = { record, tokens: this.#deps.tokens.get(record.id), view: null }
    if (this.#cache !== null) {
      this.#cache.set(key, entry)
      this.#keyOf.set(record.id, key)
    }
    return entry
  }

  // Sessions ended by another connection (`sessions invalidate`, `users disable`, a
  // back-channel logout another process took) must stop working at once, not when their
  // cache entry ages out. PRAGMA data_version tells, for the cost of one statement, whether
  // anyone else wrote; only then is the revocation counter read, and only when it moved is the
  // cache dropped (the rows are read again). This is the session path only: bearer tokens
  // never come here.
  #noticeRevocations (): void {
    if (this.#cache === null) return
    const version = this.#repo.dataVersion()
    if (version === this.#seenDataVersion) return
    this.#seenDataVersion = version
    const revocations = this.#repo.revocations()
    if (revocations === this.#seenRevocations) return
    this.#seenRevocations = revocations
    this.#cache.clear()
  }

  async #current (entry: Entry, now: number): Promise<Identity | null> {
    const tokens = entry.tokens
    if (tokens !== null && tokens.accessExpiresAt <= now) {
      if (tokens.refreshToken !== null && this.#deps.pool.reachable()) {
        const result = await this.refresh(entry.record.id)
        if (result === 'success' || result === 'invalid_grant' || result === 'rejected') {
          // Re-read: the refresh wrote new tokens, or ended the session or its Keycloak part.
          // Once only: a token that looks expired straight after a refresh is not refreshed again.
          const record = this.#repo.find(entry.record.id)
          if (record === null || record.endedAt !== null) return null
          entry.record = { ...record, lastSeenAt: Math.max(record.lastSeenAt, this.#touches.get(record.id) ?? 0) }
          entry.tokens = this.#deps.tokens.get(record.id)
          entry.view = null
          return this.#view(entry)
        }
      }
      if (entry.record.endedAt !== null) return null
      if (entry.tokens !== null) return this.#offline(entry, entry.tokens, now)
    }
    return this.#view(entry)
  }

  // Keycloak unreachable, or its answer unusable, with an expired access token: the grace period decides.
  #offline (entry: Entry, tokens: CachedTokens, now: number): Identity | null {
    const { config } = this.#deps
    const record = entry.record
    if (config.keycloak.resilience.allow_offline_mode && now < tokens.cachedAt + this.#graceMs) {
      if (record.mode !== 'cached') this.#setMode(entry, 'cached', record.identity)
      return this.#view(entry)
    }
    const local = config.session.after_grace === 'local' && localLoginAllowed(config.local_auth.allow, record.identity.roles)
    this.#deps.log.info({ session: record.id, user: record.username, to: local ? 'local' : 'login' }, 'cached tokens passed the grace period')
    if (!local) return this.#expire(record, 'grace_expired')
    this.#dropTokens(entry)
    this.#setMode(entry, 'local', record.identity)
    return this.#view(entry)
  }

  #view (entry: Entry): Identity {
    const { record, tokens } = entry
    const live = record.mode === 'keycloak' && tokens !== null
    const key = `${record.mode}|${live ? tokens.accessExpiresAt : 0}`
    if (entry.view?.key === key) return entry.view.identity
    const identity: Identity = Object.freeze({
      ...record.identity,
      authMode: record.mode,
      accessToken: live ? tokens.accessToken : null,
      expiresAt: live ? tokens.accessExpiresAt : record.expiresAt
    })
    entry.view = { key, identity }
    return identity
  }

  /**
   * Refreshes a session's tokens, once at a time per session: concurrent callers share the
   * one request, so the refresh token (which Keycloak may rotate) is sent once.
   */
  refresh (sessionId: string): Promise<RefreshResult> {
    let pending = this.#inflight.get(sessionId)
    if (pending === undefined) {
      pending = this.#refresh(sessionId).finally(() => this.#inflight.delete(sessionId))
      this.#inflight.set(sessionId, pending)
    }
    return pending
  }

  async #refresh (sessionId: string): Promise<RefreshResult> {
    const deps = this.#deps
    // Read from SQLite, not memory: the last refresh token written is the only one still good.
    const tokens = deps.tokens.get(sessionId)
    const record = this.#repo.find(sessionId)
    if (tokens?.refreshToken == null || record === null || record.endedAt !== null) return this.#count('no_refresh_token')
    let fresh: TokenSet
    try {
      fresh = await deps.oidc.refresh(tokens.refreshToken)
    } catch (err) {
      // Any 4xx is Keycloak's answer that this grant is over (invalid_grant, invalid_client, a
      // disabled client, a body that is not even JSON): final, never an outage that earns the
      // grace period, or a user logged out at Keycloak keeps access for a day. Network failures,
      // 5xx and answers that failed our checks keep the tokens (RFC 6749 §5.2).
      if (err instanceof KeycloakRejected && err.status >= 400 && err.status < 500) {
        if (err.oauthError !== 'invalid_grant') deps.log.warn({ session: sessionId, status: err.status, reason: err.message }, 'token refresh refused; ending the session\'s keycloak part')
        this.#keycloakPartEnded(record)
        return this.#count(err.oauthError === 'invalid_grant' ? 'invalid_grant' : 'rejected')
      }
      const unavailable = err instanceof KeycloakUnavailable
      deps.log.warn({ session: sessionId, err: unavailable ? undefined : err, reason: (err as Error).message }, unavailable ? 'token refresh deferred: keycloak unreachable' : 'token refresh failed; keeping the cached tokens')
      return this.#count(unavailable ? 'unavailable' : 'failed')
    }
    const now = deps.clock.now()
    const next = cachedTokensOf(record, fresh, now)
    // Keycloak may not rotate the refresh token: the old one stays good then.
    if (next.refreshToken === null) next.refreshToken = tokens.refreshToken
    if (next.idToken === null) next.idToken = tokens.idToken
    next.refreshedAt = now
    const identity = storedIdentityOf(fresh, deps.claims)
    const sid = fresh.sid ?? record.keycloakSid
    deps.db.transaction(() => {
      deps.tokens.put(next)
      this.#repo.update(sessionId, 'keycloak', identity, record.subject ?? subjectOf(fresh), sid)
    })()
    const entry = this.#entryOf(sessionId)
    if (entry !== null) {
      entry.tokens = next
      entry.record = { ...entry.record, mode: 'keycloak', identity, keycloakSid: sid }
      entry.view = null
    }
    return this.#count('success')
  }

  // Keycloak ended the grant (any 4xx on refresh):
  // a person who proved a local password goes on locally, anyone else logs in again.
  #keycloakPartEnded (record: SessionRecord): void {
    const entry = this.#entryOf(record.id)
    const canStayLocal = record.localBasis && localLoginAllowed(this.#deps.config.local_auth.allow, record.identity.roles)
    this.#deps.log.info({ session: record.id, user: record.username, to: canStayLocal ? 'local' : 'ended' }, 'keycloak ended the session\'s tokens')
    if (!canStayLocal) {
      this.end(record.id, 'keycloak_session_ended')
      return
    }
    this.#deps.tokens.delete(record.id)
    this.#repo.update(record.id, 'local', record.identity, record.subject, null)
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

  #setMode (entry: Entry, mode: SessionMode, identity: StoredIdentity): void {
    this.#repo.update(entry.record.id, mode, identity, entry.record.subject, entry.record.keycloakSid)
    entry.record = { ...entry.record, mode, identity }
    entry.view = null
  }

  #dropTokens (entry: Entry): void {
    this.#deps.tokens.delete(entry.record.id)
    entry.tokens = null
    entry.view = null
  }

  #expire (record: SessionRecord, reason: string): null {
    this.end(record.id, reason)
    return null
  }

  /** Ends one session and forgets its tokens. Returns whether it was live. */
  end (sessionId: string, reason: string): boolean {
    const ended = this.#repo.end(sessionId, reason, this.#deps.clock.now())
    this.#forget(sessionId)
    return ended
  }

  /** Ends every live session matching a Keycloak session id, subject or user name, but `except`; returns them. */
  endWhere (match: SessionMatch, reason: string, except?: string): string[] {
    const ids = this.#repo.endWhere(match, reason, this.#deps.clock.now(), except)
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

  /** Writes the batched last-seen times (sliding renewal): one transaction, not one write per request. */
  flushTouches (): void {
    if (this.#touches.size === 0) return
    const batch = new Map(this.#touches)
    this.#touches.clear()
    this.#repo.touchMany(batch)
  }

  /** Refreshes, one session at a time, the tokens expiring within the refresh window. */
  async refreshDue (): Promise<number> {
    const windowMs = this.#deps.config.session.refresh_window_seconds * 1000
    let refreshed = 0
    for (const id of this.#deps.tokens.expiringBefore(this.#deps.clock.now() + windowMs, REFRESH_BATCH)) {
      if (!this.#deps.pool.reachable()) break
      if (await this.refresh(id) === 'success') refreshed++
    }
    return refreshed
  }

  /** Ends sessions past their lifetimes and removes tokens past their grace. */
  sweep (): { expired: number, tokensRemoved: number } {
    const now = this.#deps.clock.now()
    this.flushTouches()
    const expired = this.#repo.expire(now, this.#idleMs)
    const tokensRemoved = this.#deps.tokens.cleanup(now, this.#graceMs)
    if (expired > 0) this.#cache?.clear()
    return { expired, tokensRemoved }
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
      this.sweep()
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
    this.flushTouches()
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
