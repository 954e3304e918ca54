import { RedisUnavailable, type RedisSessionStore, type SharedRedis } from './redis-session-store.ts'
import type { SharedTokenRecord } from './service-tokens.ts'

/** Redis could not be reached (refused, timed out, circuit open): the caller decides what that means. */
export class ShareUnavailable extends Error {}

/** What a put left in Redis. */
export interface PutOutcome {
  /** written: Redis now holds (and published) it; kept: Redis' copy won the merge; conflict: the expected rev was not Redis'. */
  status: 'written' | 'kept' | 'conflict'
  /** Redis' record after the call (null: none, on a conflict against an absent one). */
  record: SharedTokenRecord | null
}

/** A change as published on the channel: records written, tokens purged. */
export interface TokenChange {
  records: SharedTokenRecord[]
  deleted: Array<{ name: string, created_at: number }>
}

/** What the service hands the share: how to apply a change, its reconciliation, whether writes wait. */
export interface ShareHandlers {
  changed: (change: TokenChange) => void
  resync: () => Promise<void>
  pending: () => boolean
}

/**
 * The shared copy of service tokens (issue 16) for `store.sessions: redis`. Only the service
 * uses it: authentication never calls Redis (the local SQLite mirror answers), management does.
 */
export interface ServiceTokenShare {
  /** Redis' record of one token, or null. */
  get: (name: string) => Promise<SharedTokenRecord | null>
  /** Every record Redis holds. */
  all: () => Promise<SharedTokenRecord[]>
  /** Stores a record: compare-and-set against `expectedRev` (0: none), or merged when null. */
  put: (record: SharedTokenRecord, expectedRev: number | null) => Promise<PutOutcome>
  /** `tokens cleanup` on Redis' copy: what changed (already published). */
  cleanup: (now: number, purgeBefore: number) => Promise<{ previousCleared: number, purged: number, change: TokenChange }>
  /** Called once by the service that owns the mirror. */
  attach: (handlers: ShareHandlers) => void
}

/**
 * {@link ServiceTokenShare} over the Redis session store's connections, breaker and deadline:
 * records in the hash `P service-tokens`, changes on the channel `P service-tokens` (see
 * redis-scripts.ts), every write one Lua script (a compare-and-set or a merge, and its
 * PUBLISH, atomically). Calls fail with {@link ShareUnavailable} when Redis cannot be reached.
 */
export class RedisServiceTokenShare implements ServiceTokenShare {
  readonly #store: RedisSessionStore
  #redis: SharedRedis | null = null
  #handlers: ShareHandlers | null = null

  constructor (store: RedisSessionStore) {
    this.#store = store
  }

  attach (handlers: ShareHandlers): void {
    if (this.#handlers !== null) throw new TypeError('a RedisServiceTokenShare serves one ServiceTokenService')
    this.#handlers = handlers
    this.#redis = this.#store.participate({
      channel: `${this.#store.prefix}service-tokens`,
      onMessage: (message) => {
        const change = parseChange(message)
        if (change !== null) handlers.changed(change)
      },
      reconcile: async () => {
        try {
          await handlers.resync()
        } catch (err) {
          // The store retries a reconciliation Redis cut short; anything else is logged by it.
          if (err instanceof ShareUnavailable) throw new RedisUnavailable(err.message)
          throw err
        }
      },
      pending: handlers.pending
    })
  }

  async #call<T> (fn: (client: Parameters<Parameters<SharedRedis['call']>[0]>[0], prefix: string) => Promise<T>): Promise<T> {
    const redis = this.#redis
    if (redis === null) throw new TypeError('attach() first')
    try {
      return await redis.call(async (c) => await fn(c, redis.prefix))
    } catch (err) {
      if (err instanceof RedisUnavailable) throw new ShareUnavailable(err.message, { cause: err })
      throw err
    }
  }

  async get (name: string): Promise<SharedTokenRecord | null> {
    const json = await this.#call(async (c, p) => await c.hget(`${p}service-tokens`, name))
    return json === null ? null : parseRecord(json)
  }

  async all (): Promise<SharedTokenRecord[]> {
    const all = await this.#call(async (c, p) => await c.hgetall(`${p}service-tokens`))
    return Object.values(all).map(parseRecord).filter((r): r is SharedTokenRecord => r !== null)
  }

  async put (record: SharedTokenRecord, expectedRev: number | null): Promise<PutOutcome> {
    const reply = await this.#call(async (c, p) => await c.ghTokenPut(p, record.name, JSON.stringify(record), expectedRev === null ? '' : expectedRev)) as [string, string]
    return { status: reply[0] as PutOutcome['status'], record: reply[1] === '' ? null : parseRecord(reply[1]) }
  }

  async cleanup (now: number, purgeBefore: number): Promise<{ previousCleared: number, purged: number, change: TokenChange }> {
    const reply = await this.#call(async (c, p) => await c.ghTokenCleanup(p, now, purgeBefore)) as [number, number, string]
    return { previousCleared: Number(reply[0]), purged: Number(reply[1]), change: parseChange(reply[2]) ?? { records: [], deleted: [] } }
  }
}

function parseRecord (json: string): SharedTokenRecord | null {
  try {
    const r = JSON.parse(json) as SharedTokenRecord
    return typeof r.name === 'string' && typeof r.current_id === 'string' && typeof r.current_hash === 'string' && typeof r.rev === 'number' ? r : null
  } catch {
    return null
  }
}

function parseChange (message: string): TokenChange | null {
  try {
    const raw = JSON.parse(message) as { records?: unknown, deleted?: unknown }
    // Lua's cjson writes an empty table as {}: an array or nothing.
    const records = Array.isArray(raw.records) ? raw.records.map((r) => parseRecord(JSON.stringify(r))).filter((r): r is SharedTokenRecord => r !== null) : []
    const deleted = Array.isArray(raw.deleted) ? (raw.deleted as Array<{ name?: unknown, created_at?: unknown }>).filter((d) => typeof d.name === 'string' && typeof d.created_at === 'number') as TokenChange['deleted'] : []
    return { records, deleted }
  } catch {
    return null
  }
}
