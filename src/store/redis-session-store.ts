import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import type { Redis, RedisOptions } from 'ioredis'
import type { Logger } from 'pino'
import { CircuitBreaker } from '../breaker/circuit-breaker.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { StoreError } from '../errors.ts'
import type { KeyRing } from './crypto.ts'
import type { Attempt, FailureWindow } from './login-attempts.ts'
import { SCRIPTS, type ScriptName } from './redis-scripts.ts'
import {
  emptyModeCounts,
  type AttemptReservation,
  type AttemptResult,
  type LockoutPolicy,
  type RefreshLease,
  type RevocationListener,
  type SessionChange,
  type SessionStore,
  type StoreHealth,
  type StoredSession
} from './session-store.ts'
import { parseStoredIdentity, type SessionMatch, type SessionMode, type SessionRecord } from './sessions.ts'
import type { SqliteSessionStore } from './sqlite-session-store.ts'
import type { CachedTokens } from './token-cache.ts'
import { StoreOutbox, type OutboxEntry } from './store-outbox.ts'
import type { SyncOrder } from '../sync/order.ts'

// ioredis is loaded when a Redis store is made, not with the program: with the default SQLite
// store it is never needed, and loading it was 18 ms of every start-up (npm run bench).
const requireHere = createRequire(import.meta.url)
let ioredis: typeof import('ioredis') | null = null
function loadIoredis (): typeof import('ioredis').Redis {
  ioredis ??= requireHere('ioredis') as typeof import('ioredis')
  return ioredis.Redis
}

/** What {@link RedisSessionStore} needs. */
export interface RedisSessionStoreOptions {
  redis: Config['store']['redis']
  /** The local copy: written through on every write, read while Redis is unreachable. */
  local: SqliteSessionStore
  ring: KeyRing
  clock: Clock
  log: Logger
}

type Fields = Record<string, string>
type ScriptArgs = Array<string | number>

/** Why a Redis call was not made or did not complete: the caller falls back to SQLite. */
export class RedisUnavailable extends Error {}

/**
 * Another part of Gatehouse whose state Redis shares between replicas over this store's
 * connections, breaker and deadline (service tokens, issue 16): its channel, what to do with
 * a message on it, and its part of every reconciliation (at start and after each reconnect).
 */
export interface SharedParticipant {
  /** The channel's full name (under the key prefix). */
  channel: string
  onMessage: (message: string) => void
  /** Run after the sessions' own reconciliation; throws RedisUnavailable to be retried. */
  reconcile: () => Promise<void>
  /** Whether local writes wait to reach Redis (the once-a-second check then reconciles). */
  pending: () => boolean
}

/** What a {@link SharedParticipant} calls Redis with. */
export interface SharedRedis {
  /** The key and channel prefix (`store.redis.key_prefix`). */
  readonly prefix: string
  /** One call under the deadline and the breaker; RedisUnavailable when it could not be made. */
  call: <T>(fn: (client: Scripted) => Promise<T>) => Promise<T>
}

/** The client a {@link SharedParticipant} is handed: ioredis with the scripts of redis-scripts.ts. */
export type Scripted = Redis & { [K in ScriptName]: (...args: ScriptArgs) => Promise<unknown> }

const MODES: readonly SessionMode[] = ['keycloak', 'cached', 'local']
// A replica back from a partition reads the revocations recorded since it last looked, less
// this margin for clocks that disagree a little.
const RESYNC_MARGIN_MS = 60_000
const REPUSH_BATCH = 100

/**
 * The session store shared by every replica (issue 14), in Redis, with this sidecar's SQLite
 * file as the floor:
 *
 * - every write goes to SQLite first (a sidecar killed with -9 loses nothing it answered), then
 *   to Redis; a write Redis did not take is kept in the outbox and replayed, in order, when it
 *   is back;
 * - reads go to Redis and are copied to SQLite (write-through), so a session seen here keeps
 *   working from the copy while Redis is away; new logins land in SQLite then;
 * - no request waits on Redis longer than `command_timeout_ms`, and none at all while the
 *   circuit (the breaker Keycloak's servers use) is open;
 * - every end of a session is published; each replica drops it from memory and its copy at
 *   once. After a reconnect the replica replays its outbox, ends the copies of sessions revoked
 *   meanwhile, pushes back the live sessions Redis lost (a restart without persistence), and
 *   drops its whole in-memory cache (a full resync).
 */
export class RedisSessionStore implements SessionStore {
  readonly kind = 'redis' as const

  /** The key and channel prefix (`store.redis.key_prefix`). */
  get prefix (): string {
    return this.#prefix
  }
  readonly #options: RedisSessionStoreOptions
  readonly #local: SqliteSessionStore
  readonly #prefix: string
  readonly #channel: string
  readonly #client: Scripted
  readonly #subscriber: Redis
  readonly #breaker: CircuitBreaker
  readonly #outbox: StoreOutbox
  readonly #listeners = new Set<RevocationListener>()
  readonly #participants: SharedParticipant[] = []
  #started = false
  readonly #log: Logger
  #ready = false
  #lastError: string | null = null
  // What the connection itself last failed with (WRONGPASS, ECONNREFUSED...): while it is down,
  // the reason to show, not the "stream isn't writeable" every command then gets.
  #connectionError: string | null = null
  // Redis' last refusal of one of our commands (NOPERM, OOM...), until a command succeeds.
  #refusal: string | null = null
  #reconciling: Promise<void> | null = null
  #reconcileAgain = false
  #lastResyncAt = 0
  #resyncDue = true
  #probe: NodeJS.Timeout | null = null
  #closed = false

  constructor (options: RedisSessionStoreOptions) {
    this.#options = options
    this.#local = options.local
    this.#log = options.log
    const { redis } = options
    this.#prefix = redis.key_prefix
    this.#channel = `${this.#prefix}revocations`
    this.#outbox = new StoreOutbox(options.local.db)
    this.#breaker = new CircuitBreaker({
      failureThreshold: redis.failure_threshold,
      cooldownMs: redis.cooldown_seconds * 1000,
      clock: options.clock,
      onTransition: ({ to, kind }) => {
        if (to === 'open') this.#log.warn({ kind, reason: this.#lastError }, 'redis unreachable: sessions carry on from sqlite')
        if (to === 'closed') {
          this.#log.warn('redis reachable again')
          this.#scheduleReconcile()
        }
      }
    })
    const RedisClient = loadIoredis()
    this.#client = new RedisClient(connectionOptions(redis)) as Scripted
    for (const [name, lua] of Object.entries(SCRIPTS)) this.#client.defineCommand(name, { numberOfKeys: 0, lua })
    this.#client.on('error', (err: Error) => {
      this.#connectionError = describe(err)
      this.#lastError = this.#connectionError
    })
    this.#client.on('ready', () => {
      this.#ready = true
      this.#connectionError = null
      // A fresh connection is the probe the breaker waits for: close it, then resync.
      this.#breaker.success()
      this.#scheduleReconcile()
    })
    this.#client.on('close', () => { this.#ready = false })
    this.#subscriber = new RedisClient({ ...connectionOptions(redis), enableOfflineQueue: true })
    this.#subscriber.on('error', () => {})
    // A resubscription after a reconnect means messages may have been missed: resync.
    let subscribedOnce = false
    this.#subscriber.on('ready', () => {
      if (subscribedOnce) this.#scheduleReconcile()
      subscribedOnce = true
    })
    this.#subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.#channel) this.#revoked(message)
      else if (!this.#closed) for (const p of this.#participants) if (p.channel === channel) p.onMessage(message)
    })
  }

  /**
   * Joins `participant` to this store's Redis: its channel is subscribed, its reconciliation
   * runs in each of the store's, and it calls Redis through the returned handle.
   */
  participate (participant: SharedParticipant): SharedRedis {
    this.#participants.push(participant)
    if (this.#started) void this.#subscriber.subscribe(participant.channel).catch(() => {})
    return { prefix: this.#prefix, call: async (fn) => await this.#call(fn) }
  }

  /** Each user's sync replay turn, in Redis (see {@link SyncOrder}). */
  readonly syncOrder: SyncOrder = {
    begin: async (item, kind, leaseMs) => {
      const owner = `${process.pid}:${this.#channel}:${item.username}:${randomUUID()}`
      const answer = String(await this.#call(async (c) => await c.ghSyncBegin(this.#prefix, item.username.toLowerCase(), kind, item.queuedAt, leaseMs, owner)))
      if (answer === 'busy') return { kind: 'busy' }
      if (answer === 'superseded') return { kind: 'superseded' }
      return { kind: 'apply', end: async () => { await this.#orLocal(async (c) => await c.ghSyncEnd(this.#prefix, item.username.toLowerCase(), owner), () => 0) } }
    }
  }

  /** Waits for Redis up to `connect_timeout_ms`; never fails (SQLite carries on without it). */
  async start (): Promise<void> {
    const timeout = this.#options.redis.connect_timeout_ms
    this.#started = true
    void this.#subscriber.subscribe(this.#channel, ...this.#participants.map((p) => p.channel)).catch(() => {})
    await new Promise<void>((resolve) => {
      if (this.#ready) return resolve()
      const timer = setTimeout(done, timeout)
      timer.unref()
      const onReady = (): void => { done() }
      this.#client.once('ready', onReady)
      function done (): void {
        clearTimeout(timer)
        resolve()
      }
    })
    if (!this.#ready) this.#log.warn({ reason: this.#lastError }, 'redis unreachable at start: sessions carry on from sqlite')
    else await this.#reconciling
    // Every second: while the circuit is open and nothing else calls, the probe it lets through
    // once per cooldown; and a reconciliation that is due (one that failed, or writes waiting).
    this.#probe = setInterval(() => {
      if (this.#breaker.probeDue()) void this.#call(async (c) => await c.ping()).catch(() => {})
      else if (this.#breaker.state === 'closed' && this.#ready && (this.#resyncDue || this.#outbox.count() > 0 || this.#participants.some((p) => p.pending()))) this.#scheduleReconcile()
    }, 1000)
    this.#probe.unref()
  }

  async close (): Promise<void> {
    this.#closed = true
    if (this.#probe !== null) clearInterval(this.#probe)
    await this.#reconciling?.catch(() => {})
    this.#listeners.clear()
    this.#client.disconnect()
    this.#subscriber.disconnect()
  }

  health (): StoreHealth {
    const unreachable = !this.#ready || this.#breaker.state !== 'closed'
    const reason = unreachable
      ? `redis unreachable${this.#lastError === null ? '' : `: ${this.#lastError}`}; sessions carry on from SQLite`
      : this.#refusal !== null ? `redis refused a command (ERR_STORE_REDIS): ${this.#refusal}; requests that need it fail` : null
    return { store: 'redis', mode: reason === null ? 'normal' : 'degraded', reason, pendingReplay: this.#outbox.count() }
  }

  // One Redis call under the deadline (ioredis' commandTimeout) and the breaker. A refused or
  // failed call throws RedisUnavailable at once, and the caller uses SQLite.
  async #call<T> (fn: (client: Scripted) => Promise<T>): Promise<T> {
    if (this.#closed || this.#breaker.acquire(true) === 'refuse') throw new RedisUnavailable('circuit open')
    try {
      const result = await fn(this.#client)
      this.#breaker.success()
      this.#refusal = null
      return result
    } catch (err) {
      // An error reply is Redis up and saying no: ours to fix, not an outage.
      if ((err as Error).name === 'ReplyError' && !/^(READONLY|LOADING|MASTERDOWN|CLUSTERDOWN|TRYAGAIN)/.test((err as Error).message)) {
        this.#breaker.success()
        // Logged once per spell of refusals (they repeat on every request until fixed).
        if (this.#refusal === null) this.#log.error({ code: 'ERR_STORE_REDIS', reason: (err as Error).message }, 'redis refused a session-store command')
        this.#refusal = (err as Error).message
        throw new StoreError('ERR_STORE_REDIS', `redis refused a command: ${(err as Error).message}`, { cause: err })
      }
      // Disconnected: the connection's own failure is the one worth showing.
      this.#lastError = !this.#ready && this.#connectionError !== null ? this.#connectionError : describe(err as Error)
      this.#breaker.failure(kindOf(err as Error), this.#lastError)
      throw new RedisUnavailable(this.#lastError)
    }
  }

  // A Redis call whose failure means "use SQLite" (the value of `fallback`); with `refused`,
  // a refusal too (reports, never the auth path: there a refusal must be loud).
  async #orLocal<T> (fn: (client: Scripted) => Promise<T>, fallback: () => T, refused = false): Promise<T> {
    try {
      return await this.#call(fn)
    } catch (err) {
      if (err instanceof RedisUnavailable) return fallback()
      if (refused && err instanceof StoreError) return fallback()
      throw err
    }
  }

  #insertArgs (record: SessionRecord, hash: Buffer, tokens: CachedTokens | null, onlyIfAbsent: boolean): ScriptArgs {
    const stat = { id: record.id, username: record.username, ip: record.ip, userAgent: record.userAgent, createdAt: record.createdAt, expiresAt: record.expiresAt, localBasis: record.localBasis }
    return [this.#prefix, record.id, hash.toString('hex'), JSON.stringify(stat), record.mode, JSON.stringify(record.identity), record.subject ?? '', record.keycloakSid ?? '',
      record.lastSeenAt, record.expiresAt, record.createdAt, record.username, onlyIfAbsent ? '1' : '0',
      tokens === null ? '' : this.#seal(tokens), tokens?.accessExpiresAt ?? 0, tokens?.cachedAt ?? 0, tokens?.refreshToken != null ? '1' : '0']
  }

  async insert (record: SessionRecord, secretHash: Buffer, tokens: CachedTokens | null): Promise<void> {
    this.#local.insertNow(record, secretHash, tokens)
    try {
      await this.#call(async (c) => await c.ghInsert(...this.#insertArgs(record, secretHash, tokens, false)))
    } catch (err) {
      if (!(err instanceof RedisUnavailable)) throw err
      this.#outbox.add('upsert', { id: record.id }, this.#options.clock.now())
    }
  }

  async findLive (secretHash: Buffer): Promise<StoredSession | null> {
    const copy = this.#local.findLiveNow(secretHash)
    let answer: unknown
    try {
      answer = await this.#call(async (c) => await c.ghFind(this.#prefix, secretHash.toString('hex'), copy?.record.id ?? ''))
    } catch (err) {
      if (err instanceof RedisUnavailable) return copy
      throw err
    }
    if (Array.isArray(answer)) {
      const found = this.#fromFields(pairs(answer as string[]))
      if (found === null || found.record.endedAt !== null) return null
      this.#local.copyNow(found, secretHash)
      return found
    }
    if (copy === null) return null
    if (answer === 'missing') {
      // Live here, unknown to Redis and never revoked there: Redis lost it (restarted without
      // persistence) or has not had it yet (made during an outage). It is pushed back.
      this.#outbox.add('upsert', { id: copy.record.id }, this.#options.clock.now())
      this.#scheduleReconcile()
      return copy
    }
    // Ended elsewhere while this copy did not hear of it.
    this.#local.endNow(copy.record.id, 'revoked', this.#options.clock.now())
    return null
  }

  async find (id: string): Promise<StoredSession | null> {
    const fields = await this.#orLocal(async (c) => await c.ghGet(this.#prefix, id), () => undefined)
    if (fields === undefined) return this.#local.findNow(id)
    return fields === null ? null : this.#fromFields(pairs(fields as string[]))
  }

  async list (options: { username?: string, includeEnded?: boolean } = {}): Promise<SessionRecord[]> {
    const fromRedis = await this.#orLocal(async (c) => {
      const ids = options.username !== undefined ? await c.smembers(`${this.#prefix}user:${options.username}`) : await c.zrevrange(`${this.#prefix}all`, 0, -1)
      if (ids.length === 0) return []
      const pipeline = c.pipeline()
      for (const id of ids) pipeline.hgetall(`${this.#prefix}session:${id}`)
      const rows = (await pipeline.exec()) ?? []
      const out: SessionRecord[] = []
      rows.forEach(([err, value], i) => {
        if (err !== null) return
        const found = this.#fromFields({ ...(value as Fields), id: ids[i] as string })
        if (found !== null) out.push(found.record)
      })
      return out
    }, () => null)
    if (fromRedis === null) return await this.#local.list(options)
    return fromRedis
      .filter((s) => options.includeEnded === true || s.endedAt === null)
      .sort((a, b) => b.createdAt - a.createdAt)
  }

  async touch (touches: ReadonlyMap<string, number>): Promise<void> {
    if (touches.size === 0) return
    this.#local.touchNow(touches)
    const args: ScriptArgs = [this.#prefix]
    for (const [id, at] of touches) args.push(id, at)
    // Idle times are approximate by design (batched); a touch Redis missed is not replayed.
    await this.#orLocal(async (c) => await c.ghTouch(...args), () => 0)
  }

  async update (id: string, change: SessionChange, fence?: number): Promise<boolean> {
    const tokens = change.tokens
    const args: ScriptArgs = [this.#prefix, id, fence ?? '', change.mode, JSON.stringify(change.identity), change.subject ?? '', change.keycloakSid ?? '',
      tokens === undefined ? 'keep' : tokens === null ? 'drop' : 'set', tokens == null ? '' : this.#seal(tokens), tokens?.accessExpiresAt ?? 0, tokens?.cachedAt ?? 0, tokens?.refreshToken != null ? '1' : '0']
    let written: boolean
    try {
      written = await this.#call(async (c) => await c.ghUpdate(...args)) === 1
    } catch (err) {
      if (!(err instanceof RedisUnavailable)) throw err
      // A change made during an outage stays in this copy: the replay only adds what Redis lacks.
      return this.#local.updateNow(id, change)
    }
    if (written) this.#local.updateNow(id, change)
    return written
  }

  async end (id: string, reason: string, now: number): Promise<boolean> {
    const local = this.#local.endNow(id, reason, now)
    try {
      const ended = await this.#call(async (c) => await c.ghEnd(this.#prefix, now, reason, '0', id)) as string[]
      return ended.length > 0 || local
    } catch (err) {
      if (!(err instanceof RedisUnavailable)) throw err
      this.#outbox.add('end', { ids: [id], reason, at: now }, now)
      return local
    }
  }

  async endWhere (match: SessionMatch, reason: string, now: number, except?: string): Promise<string[]> {
    const local = this.#local.endWhereNow(match, reason, now, except)
    const args: ScriptArgs = [this.#prefix, now, reason, match.keycloakSid ?? '', match.subject ?? '', match.username ?? '', match.sidless === true ? '1' : '0', except ?? '', '']
    if (match.keycloakSid === undefined && match.subject === undefined && match.username === undefined) return []
    try {
      const ended = await this.#call(async (c) => await c.ghEndWhere(...args)) as string[]
      if (local.length > 0) await this.#call(async (c) => await c.ghEnd(this.#prefix, now, reason, '0', ...local))
      return [...new Set([...ended, ...local])]
    } catch (err) {
      if (!(err instanceof RedisUnavailable)) throw err
      this.#outbox.add('end_where', { match, reason, at: now, except: except ?? null, ids: local }, now)
      return local
    }
  }

  async expire (now: number, idleMs: number): Promise<number> {
    const local = await this.#local.expire(now, idleMs)
    return await this.#orLocal(async (c) => Number(await c.ghExpire(this.#prefix, now, idleMs)), () => local)
  }

  async purge (now: number, olderThanMs: number): Promise<number> {
    const local = await this.#local.purge(now, olderThanMs)
    return await this.#orLocal(async (c) => Number(await c.ghPurge(this.#prefix, now - olderThanMs)), () => local)
  }

  async countByMode (now: number): Promise<Record<SessionMode, number>> {
    // Read by /status and the metrics: what this copy knows beats no report when Redis refuses.
    const counts = await this.#orLocal(async (c) => await c.ghCount(this.#prefix, now) as number[], () => null, true)
    if (counts === null) return await this.#local.countByMode()
    const out = emptyModeCounts()
    MODES.forEach((mode, i) => { out[mode] = Number(counts[i] ?? 0) })
    return out
  }

  async refreshCandidates (before: number, limit: number): Promise<string[]> {
    const ids = await this.#orLocal(async (c) => await c.zrangebyscore(`${this.#prefix}tok:refresh`, '-inf', before, 'LIMIT', 0, limit), () => null)
    return ids ?? await this.#local.refreshCandidates(before, limit)
  }

  async countUsableTokens (now: number, graceMs: number): Promise<number> {
    return await this.#orLocal(async (c) => Number(await c.ghUsable(this.#prefix, now, graceMs)), () => this.#local.countUsableTokensNow(now, graceMs), true)
  }

  async cleanupTokens (now: number, graceMs: number): Promise<number> {
    const local = await this.#local.cleanupTokens(now, graceMs)
    return await this.#orLocal(async (c) => Number(await c.ghCleanupTokens(this.#prefix, now, graceMs)), () => local)
  }

  onRevoked (listener: RevocationListener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  // Another process on this replica's file (the CLI during an outage) is noticed as with SQLite.
  pollRevocations (): void {
    this.#local.pollRevocations()
  }

  #tell (ids: readonly string[] | null): void {
    for (const listener of this.#listeners) listener(ids)
  }

  // A revocation published by any replica (this one included): the copies end, memory drops them.
  #revoked (message: string): void {
    // A message already read when close() disconnected: the SQLite file may be closed by now.
    if (this.#closed) return
    let event: { ids?: unknown, reason?: unknown, at?: unknown }
    try {
      event = JSON.parse(message) as typeof event
    } catch {
      return
    }
    if (!Array.isArray(event.ids)) return
    const ids = event.ids.filter((id): id is string => typeof id === 'string')
    const at = typeof event.at === 'number' ? event.at : this.#options.clock.now()
    const reason = typeof event.reason === 'string' ? event.reason : 'revoked'
    for (const id of ids) this.#local.endNow(id, reason, at)
    this.#tell(ids)
  }

  async reserveAttempt (attempt: Attempt, now: number, since: number, policy: LockoutPolicy): Promise<AttemptReservation> {
    const user = attempt.username?.toLowerCase() ?? ''
    const ip = attempt.ip ?? ''
    const reply = await this.#orLocal(async (c) => await c.ghReserve(this.#prefix, user, ip, now, since, policy.maxFailures, policy.lockoutMs, Math.max(now - since, policy.lockoutMs)) as number[], () => null)
    // During an outage each replica counts for itself (in SQLite): a lockout per replica, not none.
    if (reply === null) return this.#local.reserveAttemptNow(attempt, now, since, policy)
    if (reply[0] === 0) return { lockedForSeconds: Number(reply[1]) }
    return { id: `redis:${Buffer.from(JSON.stringify([Number(reply[1]), user, ip])).toString('base64url')}` }
  }

  async settleAttempt (id: string, result: AttemptResult): Promise<void> {
    if (!id.startsWith('redis:')) return this.#local.settleAttemptNow(id, result)
    let parsed: [number, string, string]
    try {
      parsed = JSON.parse(Buffer.from(id.slice('redis:'.length), 'base64url').toString('utf8')) as [number, string, string]
    } catch {
      return
    }
    const [seq, user, ip] = parsed
    await this.#orLocal(async (c) => await c.ghSettle(this.#prefix, user, ip, seq, result), () => 0)
  }

  async failures (username: string, ip: string | null, since: number): Promise<FailureWindow[]> {
    const reply = await this.#orLocal(async (c) => await c.ghFailures(this.#prefix, username.toLowerCase(), ip ?? '', since) as number[], () => null)
    if (reply === null) return this.#local.failuresNow(username, ip, since)
    const out: FailureWindow[] = []
    for (let i = 0; i < reply.length; i += 2) {
      const latest = Number(reply[i + 1])
      out.push({ count: Number(reply[i]), latest: latest < 0 ? null : latest })
    }
    return out
  }

  async purgeAttempts (before: number): Promise<number> {
    // Redis forgets attempts by itself (each window's keys expire).
    return await this.#local.purgeAttempts(before)
  }

  async lockRefresh (sessionId: string, ttlMs: number): Promise<RefreshLease | 'held' | 'unavailable'> {
    let fence: number
    try {
      fence = Number(await this.#call(async (c) => await c.ghLock(this.#prefix, sessionId, ttlMs)))
    } catch (err) {
      if (err instanceof RedisUnavailable) return 'unavailable'
      throw err
    }
    if (fence === 0) return 'held'
    return {
      fence,
      release: async () => { await this.#orLocal(async (c) => await c.ghUnlock(this.#prefix, sessionId, fence), () => 0) }
    }
  }

  #seal (tokens: CachedTokens): string {
    return this.#options.ring.encrypt(JSON.stringify(tokens), `redis:token_cache:${tokens.sessionId}`).toString('base64')
  }

  #unseal (sessionId: string, sealed: string | undefined): CachedTokens | null {
    if (sealed === undefined || sealed === '') return null
    try {
      return JSON.parse(this.#options.ring.decryptText(Buffer.from(sealed, 'base64'), `redis:token_cache:${sessionId}`)) as CachedTokens
    } catch {
      // Written with a key no longer in the ring: as in SQLite, no tokens.
      return null
    }
  }

  #fromFields (fields: Fields): StoredSession | null {
    const id = fields.id
    if (id === undefined || fields.static === undefined) return null
    try {
      const stat = JSON.parse(fields.static) as Pick<SessionRecord, 'id' | 'username' | 'ip' | 'userAgent' | 'createdAt' | 'expiresAt' | 'localBasis'>
      const ended = fields.ended === undefined ? null : Number(fields.ended)
      const record: SessionRecord = {
        id,
        username: stat.username,
        subject: fields.subject ?? null,
        mode: fields.mode as SessionMode,
        keycloakSid: fields.sid ?? null,
        identity: parseStoredIdentity(fields.identity ?? '{}'),
        ip: stat.ip,
        userAgent: stat.userAgent,
        createdAt: stat.createdAt,
        lastSeenAt: Number(fields.seen ?? stat.createdAt),
        expiresAt: stat.expiresAt,
        endedAt: ended,
        endReason: fields.reason ?? null,
        localBasis: stat.localBasis
      }
      return { record, tokens: ended === null ? this.#unseal(id, fields.tok) : null }
    } catch {
      return null
    }
  }

  #scheduleReconcile (): void {
    if (this.#closed) return
    if (this.#reconciling !== null) {
      this.#reconcileAgain = true
      return
    }
    this.#resyncDue = true
    this.#reconciling = this.#reconcile()
      .then(() => { this.#resyncDue = false })
      .catch((err: unknown) => { if (!(err instanceof RedisUnavailable)) this.#log.error({ err }, 'redis reconciliation failed') })
      .finally(() => {
        this.#reconciling = null
        if (this.#reconcileAgain) {
          this.#reconcileAgain = false
          this.#scheduleReconcile()
        }
      })
  }

  // Back from an outage (or a start): replay what waited, in order; end the copies of sessions
  // revoked meanwhile; push back live copies Redis lacks; then drop every in-memory session.
  async #reconcile (): Promise<void> {
    const now = this.#options.clock.now()
    for (;;) {
      const entries = this.#outbox.claim(now, REPUSH_BATCH, 30_000)
      if (entries.length === 0) break
      let replayed = 0
      try {
        for (const entry of entries) {
          await this.#replay(entry)
          this.#outbox.done(entry.seq)
          replayed++
        }
      } finally {
        // Redis went again part-way: what is left is this process's to retry at once (the
        // lease only keeps another process on this file, the CLI, off it meanwhile).
        if (replayed < entries.length) this.#outbox.release(entries.slice(replayed).map((e) => e.seq))
      }
    }
    const since = Math.max(0, this.#lastResyncAt - RESYNC_MARGIN_MS)
    const revoked = await this.#call(async (c) => await c.zrangebyscore(`${this.#prefix}revoked`, since, '+inf', 'WITHSCORES'))
    for (let i = 0; i < revoked.length; i += 2) this.#local.endNow(revoked[i] as string, 'revoked', Number(revoked[i + 1]))
    const live = (await this.#local.list()).filter((s) => s.expiresAt > now)
    for (let i = 0; i < live.length; i += REPUSH_BATCH) {
      const batch = live.slice(i, i + REPUSH_BATCH)
      await this.#call(async (c) => {
        const pipeline = c.pipeline()
        for (const record of batch) {
          const hash = this.#local.secretHashOf(record.id)
          if (hash !== null) (pipeline as unknown as Scripted).ghInsert(...this.#insertArgs(record, hash, this.#local.findNow(record.id)?.tokens ?? null, true))
        }
        await pipeline.exec()
      })
    }
    this.#lastResyncAt = now
    this.#tell(null)
    for (const participant of this.#participants) await participant.reconcile()
  }

  async #replay (entry: OutboxEntry): Promise<void> {
    const payload = entry.payload
    if (entry.operation === 'upsert') {
      const copy = this.#local.findNow(String(payload.id))
      const hash = this.#local.secretHashOf(String(payload.id))
      if (copy === null || hash === null) return
      if (copy.record.endedAt !== null) {
        await this.#call(async (c) => await c.ghEnd(this.#prefix, copy.record.endedAt as number, copy.record.endReason ?? 'revoked', '1', copy.record.id))
        return
      }
      await this.#call(async (c) => await c.ghInsert(...this.#insertArgs(copy.record, hash, copy.tokens, true)))
      return
    }
    const at = Number(payload.at)
    const reason = String(payload.reason)
    const ids = Array.isArray(payload.ids) ? payload.ids.map(String) : []
    if (ids.length > 0) await this.#call(async (c) => await c.ghEnd(this.#prefix, at, reason, '1', ...ids))
    if (entry.operation === 'end_where') {
      const match = payload.match as SessionMatch
      // Only sessions that existed when the revocation was made: a later login is not ended.
      await this.#call(async (c) => await c.ghEndWhere(this.#prefix, at, reason, match.keycloakSid ?? '', match.subject ?? '', match.username ?? '', match.sidless === true ? '1' : '0', typeof payload.except === 'string' ? payload.except : '', at))
    }
  }
}

function pairs (flat: readonly string[]): Fields {
  const out: Fields = {}
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i] as string] = flat[i + 1] as string
  return out
}

function describe (err: Error): string {
  const code = (err as NodeJS.ErrnoException).code
  return code !== undefined ? `${code}: ${err.message}` : err.message
}

function kindOf (err: Error): string {
  const code = (err as NodeJS.ErrnoException).code
  if (/timed? ?out/i.test(err.message)) return 'timeout'
  if (code === 'ECONNREFUSED') return 'refused'
  if (code === 'ECONNRESET') return 'reset'
  return 'unavailable'
}

/**
 * ioredis options from `store.redis`: no offline queue (a command while disconnected fails at
 * once instead of waiting for a reconnect), no retries per request (the breaker decides), the
 * command deadline, and Sentinel when configured (ioredis asks the Sentinels for the primary,
 * and again after a failover; a READONLY reply from a demoted primary forces the same). With
 * `rediss://`, TLS everywhere: to the server, or to the Sentinels and the primary they name.
 */
export function connectionOptions (redis: Config['store']['redis']): RedisOptions {
  const url = new URL(redis.url)
  const db = Number(url.pathname.replace(/^\//, '') || '0')
  const tls = url.protocol === 'rediss:' ? { servername: url.hostname } : undefined
  const username = redis.username ?? (url.username !== '' ? decodeURIComponent(url.username) : undefined)
  const password = redis.password ?? (url.password !== '' ? decodeURIComponent(url.password) : undefined)
  const common: RedisOptions = {
    db: Number.isInteger(db) ? db : 0,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    connectTimeout: redis.connect_timeout_ms,
    commandTimeout: redis.command_timeout_ms,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    // Reconnect quickly, then every second at most: the breaker, not this, keeps requests off Redis.
    retryStrategy: (times) => Math.min(50 * times, 1000),
    reconnectOnError: (err) => /^READONLY/.test(err.message) ? 2 : false,
    lazyConnect: false
  }
  if (redis.sentinels.length === 0) return { ...common, ...(tls !== undefined ? { tls } : {}), host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || 6379) }
  // rediss:// with Sentinels: TLS to the Sentinels and to the primary they name, each verified
  // against its own host name (the URL's host is not the server's here, so no servername).
  return {
    ...common,
    sentinels: redis.sentinels.map((s) => ({ host: s.host, port: s.port })),
    name: redis.name as string,
    ...(redis.sentinel_password !== undefined ? { sentinelPassword: redis.sentinel_password } : {}),
    ...(tls !== undefined ? { tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
    // Asking a Sentinel has the connection's deadline: a dead one is skipped for the next.
    sentinelCommandTimeout: redis.connect_timeout_ms,
    sentinelRetryStrategy: (times) => Math.min(50 * times, 1000)
  }
}
