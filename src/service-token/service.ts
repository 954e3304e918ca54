import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { ServiceTokensConfig } from '../config/schema.ts'
import { ServiceTokenError, UsageError } from '../errors.ts'
import type { Identity } from '../identity.ts'
import type { AuditLogRepository } from '../store/audit-log.ts'
import type { Db } from '../store/db.ts'
import { ServiceTokensRepository, type Generation, type ServiceTokenRecord, type SharedTokenRecord } from '../store/service-tokens.ts'
import { ShareUnavailable, type ServiceTokenShare, type TokenChange } from '../store/redis-service-tokens.ts'
import type { Delivery } from './deliver.ts'
import { newIdentifier, newToken, parseToken, tokenDigest, SERVICE_TOKEN_PREFIX } from './format.ts'
import { FailureLimiter } from './limiter.ts'

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
/** Last-used times are written at most this often per token (batched, off the request path). */
export const LAST_USED_RESOLUTION_MS = MINUTE

/** Why a service token was refused (the decision's reason is `token_` + this). */
export type ServiceTokenRejection =
  /** Not a well-formed `ght_` token: length, alphabet or checksum. */
  | 'service_malformed'
  /** No token has that identifier, or the secret is not that token's. */
  | 'service_invalid'
  /** Revoked with `tokens revoke`. */
  | 'service_revoked'
  /** Past its expiry, or (a previous token) past its grace period. */
  | 'service_expired'
  /** Too many failures from the client's address. */
  | 'service_locked'

/** What checking a service token gave. */
export type ServiceTokenOutcome =
  | { ok: true, identity: Identity }
  | { ok: false, reason: ServiceTokenRejection, detail: string }

/** Whether a bearer token is meant as a service token (and must never go to the JWT verifier). */
export function isServiceToken (token: string): boolean {
  return token.startsWith(SERVICE_TOKEN_PREFIX)
}

/** One of the two alert conditions of issue 16, for the alert engine. */
export type ServiceTokenAlert =
  | { kind: 'expiring', name: string, expires_at: string, seconds_left: number, auto_rotate_days: number | null }
  | { kind: 'previous_in_use', name: string, previous_valid_until: string, seconds_left: number, previous_last_used_at: string }

/** A token as `tokens list --json` prints it: never a secret or a hash. */
export interface ServiceTokenView {
  name: string
  /** Public identifier of the current token: the part after `ght_` (12 characters), to tell which name a found token belongs to. */
  id: string
  state: 'active' | 'expired' | 'revoked'
  roles: string[]
  description: string | null
  created_at: string
  expires_at: string
  last_used_at: string | null
  rotated_at: string | null
  previous_live: boolean
  previous_id: string | null
  previous_valid_until: string | null
  previous_last_used_at: string | null
  auto_rotate_days: number | null
  revoked_at: string | null
}

/** Counts for `gatehouse_service_tokens{state}`. `in_grace` counts live previous tokens (not a state of its own row). */
export type ServiceTokenCounts = Record<'active' | 'expiring' | 'expired' | 'revoked' | 'in_grace', number>

/** What `/status` reports about service tokens. */
export interface ServiceTokenStatus {
  total: number
  counts: ServiceTokenCounts
  /** Live tokens expiring within `expiry_warning_days`, soonest first. */
  expiring: Array<{ name: string, expires_at: string, auto_rotate_days: number | null }>
  alerts: ServiceTokenAlert[]
}

/** What {@link ServiceTokenService} needs. */
export interface ServiceTokenServiceDeps {
  db: Db
  clock: Clock
  log: Logger
  audit: AuditLogRepository
  config: ServiceTokensConfig
  /** Where automatically rotated tokens go; null or absent: automatic rotation stays off. */
  delivery?: Delivery | null
  /**
   * The copy every replica shares (Redis, with `store.sessions: redis`); absent: this file is
   * the only copy. With it, this file is a mirror: changes are made against Redis' record and
   * published, and every replica's mirror follows within the publish's round trip.
   */
  shared?: ServiceTokenShare | null
}

/** What a management operation adds about the shared copy. */
export interface SharedOutcome {
  /**
   * True when Redis could not be reached and the change (a revoke) is applied to this file
   * only, queued to be merged into Redis when it is back; false otherwise (and without Redis).
   */
  queued: boolean
}

/** What `tokens create` takes. */
export interface NewServiceTokenInput {
  name: string
  roles: readonly string[]
  description?: string | null
  expiresDays?: number
  autoRotateDays?: number | null
  /** Who asked, for the audit log (`cli`). */
  via: string
}

interface Verified {
  name: string
  id: string
  generation: Generation
  identity: Identity
  validUntil: number
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/
const ROLE = /^[^\s,]{1,128}$/
// Compared against when the identifier is unknown, so every well-formed token costs one
// digest and one timingSafeEqual whatever it names.
const NO_DIGEST = Buffer.alloc(32)
const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

/**
 * Service tokens (issue 16): Gatehouse's own credentials for machine clients. The request
 * side ({@link authenticate}) looks a token up by its identifier and compares the SHA-256 of
 * the whole token with the stored one in constant time; verified tokens are kept in memory
 * and dropped whenever another connection changed a token (`PRAGMA data_version`, then the
 * change counter), so a revoke or rotation from the CLI or another worker counts from the next
 * request. The management side (create, rotate, revoke, cleanup) is what the CLI calls.
 */
export class ServiceTokenService {
  readonly #deps: ServiceTokenServiceDeps
  readonly #repo: ServiceTokensRepository
  readonly #limiter: FailureLimiter
  readonly #verified = new Map<string, Verified>()
  /** Uses not yet written: identifier → latest time. */
  readonly #uses = new Map<string, { at: number }>()
  /** When each identifier's use was last written (or queued), for the once-a-minute rule. */
  readonly #written = new Map<string, number>()
  readonly #warnedUndelivered = new Set<string>()
  #seenDataVersion = -1
  #seenChanges = -1
  #timer: NodeJS.Timeout | null = null
  #tick: Promise<void> | null = null

  constructor (deps: ServiceTokenServiceDeps) {
    this.#deps = deps
    this.#repo = new ServiceTokensRepository(deps.db)
    this.#limiter = new FailureLimiter({ maxFailures: deps.config.max_failed_attempts, windowMs: deps.config.lockout_minutes * MINUTE })
    deps.shared?.attach({
      changed: (change) => { this.#applyChange(change) },
      resync: async () => { await this.resync() },
      pending: () => this.#repo.pendingCount() > 0
    })
  }

  /** The table, for reports. */
  get repository (): ServiceTokensRepository {
    return this.#repo
  }

  /** Verified tokens held in memory. */
  get cacheSize (): number {
    return this.#verified.size
  }

  /**
   * Who a `ght_` bearer token is, or why not. Never throws for anything a client sends, and
   * never logs the token. `ip` is the client address the failure limit counts against.
   */
  authenticate (token: string, ip: string | undefined): ServiceTokenOutcome {
    const now = this.#deps.clock.now()
    const locked = this.#limiter.lockedFor(ip, now)
    if (locked > 0) return { ok: false, reason: 'service_locked', detail: `too many failed attempts from this address; retry in ${Math.ceil(locked / 1000)} s` }
    this.#noticeChanges()
    const parsed = parseToken(token)
    if ('malformed' in parsed) return this.#fail(ip, now, 'service_malformed', `not a valid service token (${parsed.malformed})`, null)
    const digest = tokenDigest(token)
    const key = digest.toString('base64')
    let verified = this.#verified.get(key)
    if (verified === undefined) {
      const match = this.#repo.findByIdentifier(parsed.id)
      const expected = match?.digest.length === 32 ? match.digest : NO_DIGEST
      const equal = timingSafeEqual(digest, expected)
      if (match === null || !equal) return this.#fail(ip, now, 'service_invalid', 'unknown or wrong service token', parsed.id)
      const { record, generation } = match
      if (record.revokedAt !== null) return { ok: false, reason: 'service_revoked', detail: 'service token revoked' }
      const validUntil = generation === 'current' ? record.expiresAt : record.previousValidUntil ?? 0
      verified = { name: record.name, id: parsed.id, generation, validUntil, identity: identityOf(record, validUntil) }
      this.#verified.set(key, verified)
    }
    if (verified.validUntil <= now) {
      this.#verified.delete(key)
      return { ok: false, reason: 'service_expired', detail: verified.generation === 'previous' ? 'the grace period of this rotated service token is over' : 'service token expired' }
    }
    this.#used(verified, now)
    return { ok: true, identity: verified.identity }
  }

  #fail (ip: string | undefined, now: number, reason: 'service_malformed' | 'service_invalid', detail: string, id: string | null): ServiceTokenOutcome {
    if (this.#limiter.fail(ip, now)) {
      this.#deps.log.warn({ ip, minutes: this.#deps.config.lockout_minutes }, 'too many failed service tokens from one address; locking it out')
      this.#deps.audit.append({ actor: null, action: 'service_token_lockout', result: 'failure', authMode: 'service', ip: ip ?? null, reason, detail: { minutes: this.#deps.config.lockout_minutes, ...(id !== null ? { last_id: id } : {}) } }, now)
    }
    return { ok: false, reason, detail }
  }

  // As SessionService#noticeRevocations: one statement per request says whether another
  // connection wrote; only then is the change counter read, and only when it moved is
  // everything verified forgotten (and checked against the table again).
  #noticeChanges (): void {
    const version = this.#repo.dataVersion()
    if (version === this.#seenDataVersion) return
    this.#seenDataVersion = version
    const changes = this.#repo.changes()
    if (changes === this.#seenChanges) return
    this.#seenChanges = changes
    this.#verified.clear()
  }

  // Changes made through this connection do not move its data_version.
  #changed (): void {
    this.#verified.clear()
  }

  #used (verified: Verified, now: number): void {
    const last = this.#written.get(verified.id)
    if (last !== undefined && now - last < LAST_USED_RESOLUTION_MS) return
    this.#written.set(verified.id, now)
    this.#uses.set(verified.id, { at: now })
  }

  /**
   * Writes the uses queued since the last call, in one transaction: the first use of a
   * current token (after its creation or a rotation) also writes its audit entry, once, across
   * every process on the file.
   */
  flushUses (): void {
    if (this.#uses.size === 0) return
    const batch = [...this.#uses]
    this.#uses.clear()
    const { db, audit } = this.#deps
    db.transaction(() => {
      for (const [id, use] of batch) {
        if (this.#repo.markFirstUse(id, use.at)) {
          const record = this.#repo.findByIdentifier(id)?.record
          if (record !== undefined) {
            audit.append({ actor: `service:${record.name}`, action: 'service_token_first_use', result: 'success', authMode: 'service', detail: { name: record.name, id, after_rotation: record.rotatedAt !== null, rotated_at: iso(record.rotatedAt) } }, use.at)
          }
        } else {
          this.#repo.touch(id, use.at)
        }
      }
    })()
  }

  /**
   * Issues a token; returns it (printed once, never stored) with its row. With Redis, made
   * against Redis' record: refused (ERR_SERVICE_TOKEN_REDIS_UNAVAILABLE) while Redis cannot be
   * reached, since a token only this replica knows would be refused by the others.
   */
  async create (input: NewServiceTokenInput): Promise<{ token: string, record: ServiceTokenRecord } & SharedOutcome> {
    checkName(input.name)
    const base = await this.#pull(input.name, 'create')
    const made = this.#createLocal(input)
    const queued = await this.#push(input.name, base, 'create', input.via)
    return { ...made, record: this.#repo.find(made.record.name) as ServiceTokenRecord, queued }
  }

  #createLocal (input: NewServiceTokenInput): { token: string, record: ServiceTokenRecord } {
    const name = checkName(input.name)
    const roles = checkRoles(input.roles)
    const lifetimeDays = input.expiresDays ?? this.#deps.config.default_expires_days
    const autoRotateDays = input.autoRotateDays ?? null
    if (autoRotateDays !== null && autoRotateDays >= lifetimeDays) throw new UsageError(`--auto-rotate-days (${autoRotateDays}) must be fewer than the token's lifetime (${lifetimeDays} days)`)
    const now = this.#deps.clock.now()
    const existing = this.#repo.find(name)
    if (existing !== null && existing.revokedAt === null) {
      throw new ServiceTokenError('ERR_SERVICE_TOKEN_EXISTS', `a service token named ${name} exists (created ${iso(existing.createdAt) ?? ''}); rotate it, or revoke it first`)
    }
    const id = newIdentifier()
    const token = newToken(id)
    this.#deps.db.transaction(() => {
      this.#repo.insert({ name, roles, description: input.description ?? null, lifetimeDays, autoRotateDays, id, digest: tokenDigest(token) }, now)
      this.#deps.audit.append({ actor: `service:${name}`, action: 'service_token_created', result: 'success', authMode: 'service', detail: { via: input.via, name, id, roles, expires_at: iso(now + lifetimeDays * DAY), auto_rotate_days: autoRotateDays } }, now)
    })()
    this.#changed()
    return { token, record: this.#repo.find(name) as ServiceTokenRecord }
  }

  /**
   * Makes a new current token. The one it replaces stays valid for `graceDays` (default
   * `service_tokens.default_grace_days`), never beyond its own expiry: a rotation never makes
   * a credential live longer. A previous token still inside its grace period stops at once;
   * `replacedPrevious` says so.
   */
  async rotate (name: string, options: { graceDays?: number, via: string }): Promise<{ token: string, record: ServiceTokenRecord, replacedPrevious: boolean } & SharedOutcome> {
    const base = await this.#pull(name, 'rotate')
    const made = this.#rotateLocal(name, options)
    const queued = await this.#push(name, base, 'rotate', options.via)
    return { ...made, record: this.#repo.find(name) as ServiceTokenRecord, queued }
  }

  #rotateLocal (name: string, options: { graceDays?: number, via: string }): { token: string, record: ServiceTokenRecord, replacedPrevious: boolean } {
    const record = this.#repo.find(name)
    if (record === null) throw new ServiceTokenError('ERR_SERVICE_TOKEN_NOT_FOUND', `no service token named ${JSON.stringify(name)}`)
    if (record.revokedAt !== null) throw new ServiceTokenError('ERR_SERVICE_TOKEN_REVOKED', `service token ${name} was revoked at ${iso(record.revokedAt) ?? ''}; create a new one`)
    const now = this.#deps.clock.now()
    const graceDays = options.graceDays ?? this.#deps.config.default_grace_days
    const previousValidUntil = Math.max(now, Math.min(now + graceDays * DAY, record.expiresAt))
    const replacedPrevious = record.previousId !== null && (record.previousValidUntil ?? 0) > now
    const id = newIdentifier()
    const token = newToken(id)
    const rotated = this.#deps.db.transaction(() => {
      if (!this.#repo.rotate(name, record.currentId, { id, digest: tokenDigest(token) }, previousValidUntil, now)) return false
      this.#deps.audit.append({
        actor: `service:${name}`,
        action: 'service_token_rotated',
        result: 'success',
        authMode: 'service',
        detail: { via: options.via, name, id, previous_id: record.currentId, previous_valid_until: iso(previousValidUntil), grace_days: graceDays, replaced_live_previous: replacedPrevious ? record.previousId : null }
      }, now)
      return true
    })()
    if (!rotated) throw new ServiceTokenError('ERR_SERVICE_TOKEN_CONFLICT', `service token ${name} was rotated or revoked meanwhile; nothing changed`)
    this.#changed()
    return { token, record: this.#repo.find(name) as ServiceTokenRecord, replacedPrevious }
  }

  /**
   * Revokes a token (both generations), or with `previousOnly` ends its previous token's
   * grace period now. Idempotent: `changed` is false when there was nothing left to revoke.
   */
  async revoke (name: string, options: { previousOnly?: boolean, via: string }): Promise<{ changed: boolean, record: ServiceTokenRecord } & SharedOutcome> {
    // A revoke is never refused for want of Redis: it is applied here at once (this file's
    // processes refuse the token from their next request) and merged into Redis when it is
    // back, where a revoked copy always wins. Against a concurrent change elsewhere, read again
    // and revoke again (idempotent) a few times.
    for (let attempt = 1; ; attempt++) {
      const base = await this.#pull(name, 'revoke')
      const done = this.#revokeLocal(name, options)
      try {
        // A whole revoke merges (it wins over anything but a newer token of the name); ending
        // only the previous token is a compare-and-set, since a rotation meanwhile replaces it.
        const queued = await this.#push(name, base, options.previousOnly === true ? 'revoke_previous' : 'revoke', options.via)
        return { ...done, record: this.#repo.find(name) as ServiceTokenRecord, queued }
      } catch (err) {
        if (!(err instanceof ServiceTokenError && err.code === 'ERR_SERVICE_TOKEN_CONFLICT') || attempt >= 3) throw err
      }
    }
  }

  #revokeLocal (name: string, options: { previousOnly?: boolean, via: string }): { changed: boolean, record: ServiceTokenRecord } {
    const record = this.#repo.find(name)
    if (record === null) throw new ServiceTokenError('ERR_SERVICE_TOKEN_NOT_FOUND', `no service token named ${JSON.stringify(name)}`)
    const now = this.#deps.clock.now()
    const previousOnly = options.previousOnly === true
    const changed = this.#deps.db.transaction(() => {
      const done = previousOnly ? this.#repo.revokePrevious(name, now) : this.#repo.revoke(name, now)
      if (done) {
        this.#deps.audit.append({ actor: `service:${name}`, action: 'service_token_revoked', result: 'success', authMode: 'service', detail: { via: options.via, name, previous_only: previousOnly, id: previousOnly ? record.previousId : record.currentId } }, now)
      }
      return done
    })()
    this.#changed()
    return { changed, record: this.#repo.find(name) as ServiceTokenRecord }
  }

  /**
   * Forgets previous tokens past their grace; deletes tokens revoked or expired more than
   * `days` ago. With Redis, done on Redis' copy (and so on every replica's mirror); refused
   * while Redis cannot be reached (it is routine work: run it again later).
   */
  async cleanup (days: number): Promise<{ previous_cleared: number, purged: number, days: number }> {
    const now = this.#deps.clock.now()
    const shared = this.#deps.shared
    if (shared == null) {
      const { previousCleared, purged } = this.#repo.cleanup(now, now - days * DAY)
      this.#changed()
      return { previous_cleared: previousCleared, purged, days }
    }
    let done: Awaited<ReturnType<ServiceTokenShare['cleanup']>>
    try {
      // Local changes not yet in Redis first, so none is purged unseen or brought back after.
      await this.resync()
      done = await shared.cleanup(now, now - days * DAY)
    } catch (err) {
      throw this.#unavailable(err, 'cleanup')
    }
    this.#applyChange(done.change)
    return { previous_cleared: done.previousCleared, purged: done.purged, days }
  }

  // ---- the shared copy (store.sessions: redis) ----

  #unavailable (err: unknown, what: string): unknown {
    if (!(err instanceof ShareUnavailable)) return err
    return new ServiceTokenError('ERR_SERVICE_TOKEN_REDIS_UNAVAILABLE', `tokens ${what} needs Redis (store.sessions is redis, so every replica shares service tokens through it), and Redis cannot be reached: ${err.message}; nothing changed. Try again once Redis is back (a revoke works without it).`, { cause: err })
  }

  // Brings this file's copy of one token up to Redis' before a change is made against it, and
  // returns the rev the change is based on; null when there is no shared copy, or (a revoke)
  // when Redis cannot be reached. This file's copy is merged first: it may be one Redis lost
  // (a restart without persistence) or a change that waited for Redis.
  async #pull (name: string, what: 'create' | 'rotate' | 'revoke'): Promise<{ rev: number } | null> {
    const shared = this.#deps.shared
    if (shared == null) return null
    try {
      const local = this.#repo.shared(name)
      const remote = local === null ? await shared.get(name) : (await shared.put(local.record, null)).record
      if (local !== null && remote !== null) this.#repo.settled(name, local.record.rev)
      if (remote !== null) this.#mirror(remote)
      return { rev: this.#repo.shared(name)?.record.rev ?? remote?.rev ?? 0 }
    } catch (err) {
      if (what === 'revoke' && err instanceof ShareUnavailable) return null
      throw this.#unavailable(err, what)
    }
  }

  // Sends this file's record of `name` to Redis after a change based on `base`. Returns whether
  // it is queued (Redis unreachable: the row stays shared_pending and is merged later). A
  // create, a rotation or the end of a previous token is a compare-and-set: when Redis' record
  // moved meanwhile (another replica changed it), Redis' wins, this file mirrors it, and the
  // caller gets ERR_SERVICE_TOKEN_CONFLICT. A revoke merges, and a revoked copy always wins.
  async #push (name: string, base: { rev: number } | null, what: 'create' | 'rotate' | 'revoke' | 'revoke_previous', via: string): Promise<boolean> {
    const shared = this.#deps.shared
    if (shared == null) return false
    const local = this.#repo.shared(name)
    if (local === null || !local.pending) return false
    if (base === null) {
      this.#deps.log.warn({ name, operation: what }, 'redis unreachable: service token change applied on this replica only, queued for redis')
      return true
    }
    let outcome
    try {
      outcome = await shared.put(local.record, what === 'revoke' ? null : base.rev)
    } catch (err) {
      if (!(err instanceof ShareUnavailable)) throw err
      // Redis went away between the read and the write: the change is made here and waits.
      this.#deps.log.warn({ name, operation: what }, 'redis unreachable: service token change applied on this replica only, queued for redis')
      return true
    }
    if (outcome.status === 'conflict') {
      if (outcome.record !== null) this.#mirror(outcome.record, true)
      else this.#repo.forget(name, Number.MAX_SAFE_INTEGER, this.#deps.clock.now())
      this.#changed()
      if (what !== 'revoke_previous') {
        this.#deps.audit.append({ actor: `service:${name}`, action: what === 'create' ? 'service_token_created' : 'service_token_rotated', result: 'failure', authMode: 'service', reason: 'conflict', detail: { via, name, id: local.record.current_id } }, this.#deps.clock.now())
      }
      throw new ServiceTokenError('ERR_SERVICE_TOKEN_CONFLICT', `service token ${name} was changed on another replica meanwhile; nothing changed (tokens list shows it now)`)
    }
    this.#repo.settled(name, local.record.rev)
    if (outcome.record !== null) this.#mirror(outcome.record)
    return false
  }

  // Makes this file's copy of a token Redis' record, unless this file's is the one that must
  // win (a revoke or change not in Redis yet: then it stays queued). `force`: Redis' always.
  #mirror (remote: SharedTokenRecord, force = false): void {
    const local = this.#repo.shared(remote.name)
    if (!force && local !== null && prefersLocal(local.record, remote)) {
      if (!local.pending) this.#repo.markPending(remote.name)
      return
    }
    if (local !== null && !local.pending && sameRecord(local.record, remote)) return
    this.#repo.mirror(remote, this.#deps.clock.now())
    this.#changed()
  }

  // A change published by any replica (this one included).
  #applyChange (change: TokenChange): void {
    const now = this.#deps.clock.now()
    for (const record of change.records) this.#mirror(record)
    for (const gone of change.deleted) if (this.#repo.forget(gone.name, gone.created_at, now)) this.#changed()
  }

  /**
   * The full resync (at start and after every reconnect, run by the session store): every
   * token this file holds is merged into Redis (restoring what a Redis restart lost and
   * replaying what waited), then every record Redis holds is mirrored here, and copies of
   * tokens Redis purged are forgotten. Throws ShareUnavailable when Redis goes away meanwhile.
   */
  async resync (): Promise<void> {
    const shared = this.#deps.shared
    if (shared == null) return
    for (const local of this.#repo.sharedAll()) {
      const outcome = await shared.put(local.record, null)
      if (outcome.record === null) continue
      this.#repo.settled(local.record.name, local.record.rev)
      this.#mirror(outcome.record)
    }
    const all = await shared.all()
    const names = new Set(all.map((r) => r.name))
    for (const record of all) this.#mirror(record)
    const now = this.#deps.clock.now()
    for (const local of this.#repo.sharedAll()) {
      if (!names.has(local.record.name) && !local.pending) this.#repo.forget(local.record.name, local.record.created_at, now)
    }
    this.#changed()
  }

  /** Every token as `tokens list` shows it. */
  list (): ServiceTokenView[] {
    const now = this.#deps.clock.now()
    return this.#repo.list().map((r) => viewOf(r, now))
  }

  /**
   * The two alert conditions of issue 16 at `now` (default: the clock's): live tokens
   * expiring within `expiry_warning_days` (for a token that rotates itself, only once its
   * rotation is overdue), and previous tokens still used, with under `grace_warning_hours`
   * of their grace period left.
   */
  serviceTokenAlerts (now: number = this.#deps.clock.now()): ServiceTokenAlert[] {
    const { config } = this.#deps
    const autoRotating = this.#deps.delivery != null
    const warnMs = config.grace_warning_hours * HOUR
    const alerts: ServiceTokenAlert[] = []
    for (const r of this.#repo.list()) {
      if (r.revokedAt !== null) continue
      const left = r.expiresAt - now
      const window = autoRotating && r.autoRotateDays !== null ? r.autoRotateDays * DAY : config.expiry_warning_days * DAY
      if (left > 0 && left <= window) {
        alerts.push({ kind: 'expiring', name: r.name, expires_at: iso(r.expiresAt) as string, seconds_left: Math.floor(left / 1000), auto_rotate_days: r.autoRotateDays })
      }
      if (r.previousId !== null && r.previousValidUntil !== null) {
        const graceLeft = r.previousValidUntil - now
        const pending = this.#uses.get(r.previousId)
        const lastUsed = Math.max(r.previousLastUsedAt ?? 0, pending?.at ?? 0)
        if (graceLeft > 0 && graceLeft <= warnMs && lastUsed > 0 && lastUsed >= now - warnMs) {
          alerts.push({ kind: 'previous_in_use', name: r.name, previous_valid_until: iso(r.previousValidUntil) as string, seconds_left: Math.floor(graceLeft / 1000), previous_last_used_at: iso(lastUsed) as string })
        }
      }
    }
    return alerts
  }

  /** Tokens by state, for `gatehouse_service_tokens{state}`. */
  counts (now: number = this.#deps.clock.now()): ServiceTokenCounts {
    const counts: ServiceTokenCounts = { active: 0, expiring: 0, expired: 0, revoked: 0, in_grace: 0 }
    const warnMs = this.#deps.config.expiry_warning_days * DAY
    for (const r of this.#repo.list()) {
      if (r.revokedAt !== null) counts.revoked++
      else if (r.expiresAt <= now) counts.expired++
      else if (r.expiresAt - now <= warnMs) counts.expiring++
      else counts.active++
      if (r.revokedAt === null && (r.previousValidUntil ?? 0) > now) counts.in_grace++
    }
    return counts
  }

  /** Expiry of every token not revoked, for `gatehouse_service_token_expiry_timestamp_seconds{name}`. */
  expiries (): Array<{ name: string, expiresAt: number }> {
    return this.#repo.list().filter((r) => r.revokedAt === null).map((r) => ({ name: r.name, expiresAt: r.expiresAt }))
  }

  /** Previous tokens still inside their grace period, with their last use (queued uses too), for the grace metrics. */
  graces (now: number = this.#deps.clock.now()): Array<{ name: string, validUntil: number, lastUsedAt: number | null }> {
    return this.#repo.list()
      .filter((r) => r.revokedAt === null && r.previousId !== null && (r.previousValidUntil ?? 0) > now)
      .map((r) => {
        const pending = this.#uses.get(r.previousId as string)?.at ?? 0
        const last = Math.max(r.previousLastUsedAt ?? 0, pending)
        return { name: r.name, validUntil: r.previousValidUntil as number, lastUsedAt: last > 0 ? last : null }
      })
  }

  /** What `/status` reports. */
  status (): ServiceTokenStatus {
    const now = this.#deps.clock.now()
    const warnMs = this.#deps.config.expiry_warning_days * DAY
    const records = this.#repo.list()
    const expiring = records
      .filter((r) => r.revokedAt === null && r.expiresAt > now && r.expiresAt - now <= warnMs)
      .sort((a, b) => a.expiresAt - b.expiresAt)
      .map((r) => ({ name: r.name, expires_at: iso(r.expiresAt) as string, auto_rotate_days: r.autoRotateDays }))
    return { total: records.length, counts: this.counts(now), expiring, alerts: this.serviceTokenAlerts(now) }
  }

  /**
   * Rotates every token created with `--auto-rotate-days` whose expiry is that close, and
   * hands the new token to the configured delivery. A failed delivery takes the rotation
   * back (the old token stays current and nobody holds a token that works). A token whose
   * previous one is still inside its grace period waits: an automatic rotation never cuts a
   * token off early. Returns the names rotated.
   */
  async autoRotateDue (): Promise<string[]> {
    const { clock, log, delivery } = this.#deps
    const now = clock.now()
    const due = this.#repo.list().filter((r) => r.revokedAt === null && r.autoRotateDays !== null && r.expiresAt - now <= r.autoRotateDays * DAY &&
      !(r.previousId !== null && (r.previousValidUntil ?? 0) > now))
    if (due.length === 0) return []
    if (delivery == null) {
      for (const r of due) {
        if (this.#warnedUndelivered.has(r.name)) continue
        this.#warnedUndelivered.add(r.name)
        log.warn({ name: r.name, expires_at: iso(r.expiresAt) }, 'service token due for automatic rotation, but service_tokens.auto_rotate has neither output_dir nor hook; not rotating')
      }
      return []
    }
    const rotated: string[] = []
    for (const r of due) {
      let result: Awaited<ReturnType<ServiceTokenService['rotate']>>
      try {
        result = await this.rotate(r.name, { via: 'auto_rotate' })
      } catch (err) {
        log.warn({ name: r.name, code: (err as ServiceTokenError).code }, 'automatic rotation skipped')
        continue
      }
      try {
        await delivery.deliver({ name: r.name, id: result.record.currentId, expiresAt: result.record.expiresAt, secret: result.token })
      } catch (err) {
        const rotatedRev = this.#repo.shared(r.name)?.record.rev ?? 0
        const undone = this.#repo.undoRotation(r.name, result.record.currentId, r.expiresAt, clock.now())
        this.#changed()
        // Taken back on every replica too (a compare-and-set against the rotation's record).
        if (undone) await this.#push(r.name, { rev: rotatedRev }, 'rotate', 'auto_rotate').catch((e: unknown) => { log.warn({ name: r.name, code: (e as ServiceTokenError).code }, 'taking back an automatic rotation on redis failed') })
        const failure = new ServiceTokenError('ERR_SERVICE_TOKEN_DELIVERY', `the rotated token ${r.name} could not be delivered (${delivery.describe}): ${(err as Error).message}`, { cause: err })
        log.error({ name: r.name, code: failure.code, reason: (err as Error).message, undone }, 'automatic rotation taken back: the new token could not be delivered')
        this.#deps.audit.append({ actor: `service:${r.name}`, action: 'service_token_rotated', result: 'failure', authMode: 'service', reason: 'delivery_failed', detail: { via: 'auto_rotate', name: r.name, id: result.record.currentId, undone } }, clock.now())
        continue
      }
      log.info({ name: r.name, id: result.record.currentId, expires_at: iso(result.record.expiresAt), previous_valid_until: iso(result.record.previousValidUntil), to: delivery.describe }, 'service token rotated automatically')
      rotated.push(r.name)
    }
    return rotated
  }

  /**
   * Background work: queued last-used times every minute and, when `rotate` (the one
   * process per host that should: a single process, or the cluster's leader), automatic
   * rotation every `auto_rotate.check_interval_minutes`.
   */
  start (options: { rotate: boolean }): void {
    if (this.#timer !== null) return
    const checkEvery = this.#deps.config.auto_rotate.check_interval_minutes * MINUTE
    let nextRotation = 0
    const round = async (): Promise<void> => {
      try {
        this.flushUses()
        const now = this.#deps.clock.now()
        if (options.rotate && now >= nextRotation) {
          nextRotation = now + checkEvery
          await this.autoRotateDue()
        }
      } catch (err) {
        this.#deps.log.error({ err }, 'service token background work failed')
      }
    }
    this.#timer = setInterval(() => {
      if (this.#tick !== null) return
      this.#tick = round().finally(() => { this.#tick = null })
    }, LAST_USED_RESOLUTION_MS)
    this.#timer.unref()
    if (options.rotate) this.#tick = round().finally(() => { this.#tick = null })
  }

  /** Stops the background work and writes the queued uses. */
  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.#tick
    this.flushUses()
  }
}

function identityOf (record: ServiceTokenRecord, validUntil: number): Identity {
  return Object.freeze({
    user: `service:${record.name}`,
    // A service is not a person: no user name or e-mail an app could mistake for one.
    preferredUsername: null,
    email: null,
    groups: Object.freeze([]) as readonly string[],
    roles: Object.freeze([...record.roles]),
    authMode: 'service',
    accessToken: null,
    expiresAt: validUntil
  })
}

function viewOf (r: ServiceTokenRecord, now: number): ServiceTokenView {
  return {
    name: r.name,
    id: r.currentId,
    state: r.revokedAt !== null ? 'revoked' : r.expiresAt <= now ? 'expired' : 'active',
    roles: r.roles,
    description: r.description,
    created_at: iso(r.createdAt) as string,
    expires_at: iso(r.expiresAt) as string,
    last_used_at: iso(r.currentLastUsedAt),
    rotated_at: iso(r.rotatedAt),
    previous_live: r.revokedAt === null && (r.previousValidUntil ?? 0) > now,
    previous_id: r.previousId,
    previous_valid_until: iso(r.previousValidUntil),
    previous_last_used_at: iso(r.previousLastUsedAt),
    auto_rotate_days: r.autoRotateDays,
    revoked_at: iso(r.revokedAt)
  }
}

function checkName (name: string): string {
  if (!NAME.test(name)) throw new UsageError(`a service token name is 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit; received ${JSON.stringify(name)}`)
  return name
}

function checkRoles (roles: readonly string[]): string[] {
  const out = [...new Set(roles.map((r) => r.trim()).filter((r) => r !== ''))]
  if (out.length === 0) throw new UsageError('--roles needs at least one role (comma-separated: --roles reports,read)')
  for (const role of out) if (!ROLE.test(role)) throw new UsageError(`a role has no spaces or commas and at most 128 characters; received ${JSON.stringify(role)}`)
  return out
}

// Whether this file's copy of a token must win over Redis' (the merge of redis-scripts.ts,
// seen from the mirror): a newer token of the name, a revocation Redis does not have, or a
// later change of the same token.
function prefersLocal (local: SharedTokenRecord, remote: SharedTokenRecord): boolean {
  if (local.created_at !== remote.created_at) return local.created_at > remote.created_at
  if (remote.revoked_at !== undefined) return false
  if (local.revoked_at !== undefined) return true
  return local.rev > remote.rev
}

function sameRecord (a: SharedTokenRecord, b: SharedTokenRecord): boolean {
  return a.rev === b.rev && a.created_at === b.created_at && a.current_id === b.current_id && a.previous_id === b.previous_id && a.revoked_at === b.revoked_at && a.expires_at === b.expires_at
}
