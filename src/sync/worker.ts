import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { KeycloakUnavailable } from '../errors.ts'
import type { AdminApi } from '../keycloak/admin.ts'
import type { KeycloakPool } from '../keycloak/failover.ts'
import type { SyncItem, SyncQueueRepository } from '../store/sync-queue.ts'
import type { UsersRepository } from '../store/users.ts'
import { replay } from './operations.ts'
import { orderKind, type SyncOrder, type SyncTurn } from './order.ts'

/** What one cycle did. */
export interface CycleResult {
  done: number
  failed: number
  dead: number
  /** Given back untouched because Keycloak went away. */
  released: number
}

/** Metrics the worker moves. */
export interface SyncMetrics {
  syncOperations: { inc: (labels: { operation: string, result: string }) => void }
  syncReplayDuration: { observe: (seconds: number) => void }
}

/** What {@link SyncWorker} needs. */
export interface SyncWorkerDeps {
  config: Config
  queue: SyncQueueRepository
  users: UsersRepository
  api: AdminApi
  pool: KeycloakPool
  clock: Clock
  log: Logger
  metrics: SyncMetrics
  /** Lease owner name; default host, pid and a random suffix. */
  owner?: string
  /** Called after each item is settled (progress for `users migrate-to-keycloak`). */
  onSettled?: (item: SyncItem, result: 'done' | 'failed' | 'dead' | 'released', note: string) => void
  /** Each user's order across replicas (`store.sessions: redis`); absent, this queue's order is the whole order. */
  order?: SyncOrder
}

// A cycle drains in rounds (each user's next item becomes claimable once the one before is
// done); the bound keeps one cycle from running forever behind a steady stream of writes.
const MAX_ROUNDS = 100

/**
 * Replays the sync queue to Keycloak (DESIGN §1, layer 4): only while Keycloak is reachable,
 * in batches claimed under a lease, each user's items in order, failures retried with
 * exponential backoff and jitter until `sync.max_attempts`, then dead. Attempts while
 * Keycloak is unreachable are given back and do not count.
 */
export class SyncWorker {
  readonly #d: SyncWorkerDeps
  readonly owner: string
  #running: Promise<CycleResult> | null = null
  #again = false
  #timer: NodeJS.Timeout | null = null
  #stopped = false

  constructor (deps: SyncWorkerDeps) {
    this.#d = deps
    this.owner = deps.owner ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
  }

  /** Runs a cycle soon; while one runs, one more follows it. */
  kick (): void {
    if (this.#stopped) return
    if (this.#running !== null) { this.#again = true; return }
    void this.cycle()
  }

  /** One cycle: claims and replays due items until none is left or Keycloak goes away. */
  async cycle (): Promise<CycleResult> {
    if (this.#running !== null) {
      this.#again = true
      return await this.#running
    }
    this.#running = this.#cycle().finally(() => {
      this.#running = null
      if (this.#again && !this.#stopped) { this.#again = false; void this.cycle() }
    })
    return await this.#running
  }

  async #cycle (): Promise<CycleResult> {
    const total: CycleResult = { done: 0, failed: 0, dead: 0, released: 0 }
    const { queue, pool, config, clock } = this.#d
    try {
      for (let round = 0; round < MAX_ROUNDS && !this.#stopped && pool.reachable(); round++) {
        const items = queue.claim(this.owner, clock.now(), config.sync.batch_size, config.sync.lease_seconds * 1000)
        if (items.length === 0) break
        let away = false
        for (const item of items) {
          if (away || this.#stopped) {
            queue.release(item.id, this.owner, 'keycloak unreachable; given back')
            total.released++
            continue
          }
          const result = await this.#replayOne(item)
          total[result]++
          away = result === 'released'
        }
        if (away) break
      }
    } catch (err) {
      this.#d.log.error({ err }, 'sync cycle failed')
    }
    if (total.done + total.failed + total.dead > 0) this.#d.log.info({ ...total }, 'sync cycle')
    return total
  }

  async #replayOne (item: SyncItem): Promise<keyof CycleResult> {
    const { queue, clock, log, config } = this.#d
    const started = performance.now()
    let secret: Record<string, string> | null = null
    try {
      secret = item.hasSecret ? queue.secretOf(item.id) : null
    } catch {
      // Written with a key no longer in the ring: it can never be replayed.
      return this.#settle(item, 'dead', 'the queued secret cannot be decrypted with the current key ring', started)
    }
    const turn = await this.#turn(item)
    if (turn.kind === 'busy') {
      queue.release(item.id, this.owner, 'another replica is replaying this user\'s items')
      // Its replay is one Keycloak call: come back in a second, not at the next interval.
      setTimeout(() => this.kick(), 1000).unref()
      return this.#settle(item, 'released', 'busy elsewhere', started)
    }
    if (turn.kind === 'superseded') {
      queue.complete(item.id, this.owner, clock.now())
      return this.#settle(item, 'done', 'superseded by a newer write of this user replayed by another replica', started)
    }
    try {
      const outcome = await replay(this.#d.api, this.#d.users, item, secret, clock.now())
      queue.complete(item.id, this.owner, clock.now(), outcome.payload)
      return this.#settle(item, 'done', outcome.note, started)
    } catch (err) {
      const message = (err as Error).message
      if (err instanceof KeycloakUnavailable) {
        queue.release(item.id, this.owner, message)
        return this.#settle(item, 'released', message, started)
      }
      const dead = item.attempts >= config.sync.max_attempts
      queue.fail(item.id, this.owner, message, clock.now(), dead ? { dead: true } : { dead: false, at: clock.now() + this.backoffMs(item.attempts) })
      const level = dead ? 'error' : 'warn'
      log[level]({ item: item.id, user: item.username, operation: item.operation, attempts: item.attempts, reason: message }, dead ? 'sync item dead' : 'sync item failed; will retry')
      return this.#settle(item, dead ? 'dead' : 'failed', message, started)
    } finally {
      if (turn.kind === 'apply') await turn.end()
    }
  }

  // The user's turn across replicas; without Redis (absent, or unreachable) this queue's own
  // per-user order decides, as with one replica.
  async #turn (item: SyncItem): Promise<SyncTurn> {
    const kind = orderKind(item)
    const order = this.#d.order
    const free: SyncTurn = { kind: 'apply', end: async () => {} }
    if (order === undefined || kind === null) return free
    try {
      return await order.begin(item, kind, this.#d.config.sync.lease_seconds * 1000)
    } catch (err) {
      this.#d.log.debug({ err, item: item.id }, 'sync order unavailable; replaying in this queue\'s order')
      return free
    }
  }

  #settle (item: SyncItem, result: keyof CycleResult, note: string, started: number): keyof CycleResult {
    this.#d.metrics.syncOperations.inc({ operation: item.operation, result })
    this.#d.metrics.syncReplayDuration.observe((performance.now() - started) / 1000)
    this.#d.onSettled?.(item, result, note)
    return result
  }

  /** Delay before attempt `attempts + 1`: doubling from the base, capped, with full jitter over its upper half. */
  backoffMs (attempts: number): number {
    const { backoff_base_seconds: base, backoff_max_seconds: max } = this.#d.config.sync
    const ceiling = Math.min(max, base * 2 ** Math.max(0, attempts - 1)) * 1000
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
  }

  /** Cycles every `sync.interval_seconds`, and at once when Keycloak becomes reachable. */
  start (): void {
    if (this.#timer !== null) return
    this.#stopped = false
    this.#timer = setInterval(() => this.kick(), this.#d.config.sync.interval_seconds * 1000)
    this.#timer.unref()
    let reachable = this.#d.pool.reachable()
    this.#d.pool.onChange(() => {
      const now = this.#d.pool.reachable()
      if (now && !reachable) this.kick()
      reachable = now
    })
    this.kick()
  }

  /** Stops cycling; waits for the cycle in progress (its current item finishes, the rest is given back). */
  async stop (): Promise<void> {
    this.#stopped = true
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.#running
  }
}
