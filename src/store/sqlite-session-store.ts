import type { Clock } from '../clock.ts'
import type { KeyRing } from './crypto.ts'
import type { Db } from './db.ts'
import { LoginAttemptsRepository, type Attempt, type FailureWindow } from './login-attempts.ts'
import {
  lockoutLeft,
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
import { SessionsRepository, type SessionMatch, type SessionMode, type SessionRecord } from './sessions.ts'
import { TokenCacheRepository, type CachedTokens } from './token-cache.ts'

/**
 * The session store in the SQLite file (the floor, and the whole store of one sidecar): the
 * `sessions`, `token_cache`, `login_attempts` and `refresh_locks` tables, each write in one
 * transaction. Other processes on the same file (the CLI, a second sidecar) are noticed by
 * `PRAGMA data_version` and the revocation counter every end bumps ({@link pollRevocations}).
 */
export class SqliteSessionStore implements SessionStore {
  readonly kind = 'sqlite' as const
  readonly #db: Db
  readonly #clock: Clock
  readonly #sessions: SessionsRepository
  readonly #tokens: TokenCacheRepository
  readonly #attempts: LoginAttemptsRepository
  readonly #listeners = new Set<RevocationListener>()
  #seenDataVersion = -1
  #seenRevocations = -1

  constructor (db: Db, ring: KeyRing, clock: Clock) {
    this.#db = db
    this.#clock = clock
    this.#sessions = new SessionsRepository(db)
    this.#tokens = new TokenCacheRepository(db, ring)
    this.#attempts = new LoginAttemptsRepository(db)
  }

  /** The SQLite connection this store writes to. */
  get db (): Db {
    return this.#db
  }

  // Each method is synchronous inside (better-sqlite3); the `*Now` variants serve the Redis
  // store, which keeps this one as its local copy and must write it in the same tick.

  async insert (record: SessionRecord, secretHash: Buffer, tokens: CachedTokens | null): Promise<void> {
    this.insertNow(record, secretHash, tokens)
  }

  /** {@link insert}, synchronously. */
  insertNow (record: SessionRecord, secretHash: Buffer, tokens: CachedTokens | null): void {
    this.#db.transaction(() => {
      this.#sessions.insert(record, secretHash)
      if (tokens !== null) this.#tokens.put(tokens)
    })()
  }

  /**
   * Writes a copy of a session held by the shared store (see {@link SessionsRepository.upsertCopy}),
   * with its tokens as they are there.
   */
  copyNow (session: StoredSession, secretHash: Buffer): void {
    this.#db.transaction(() => {
      this.#sessions.upsertCopy(session.record, secretHash)
      if (session.record.endedAt !== null || session.tokens === null) this.#tokens.delete(session.record.id)
      else this.#tokens.put(session.tokens)
    })()
  }

  async findLive (secretHash: Buffer): Promise<StoredSession | null> {
    return this.findLiveNow(secretHash)
  }

  /** {@link findLive}, synchronously. */
  findLiveNow (secretHash: Buffer): StoredSession | null {
    const record = this.#sessions.findLiveByHash(secretHash)
    return record === null ? null : { record, tokens: this.#tokens.get(record.id) }
  }

  async find (id: string): Promise<StoredSession | null> {
    return this.findNow(id)
  }

  /** {@link find}, synchronously. */
  findNow (id: string): StoredSession | null {
    const record = this.#sessions.find(id)
    return record === null ? null : { record, tokens: record.endedAt === null ? this.#tokens.get(id) : null }
  }

  /** The stored hash of a session's secret, or null (for copying it to the shared store). */
  secretHashOf (id: string): Buffer | null {
    return this.#sessions.secretHashOf(id)
  }

  async list (options: { username?: string, includeEnded?: boolean } = {}): Promise<SessionRecord[]> {
    return this.#sessions.list(options)
  }

  async touch (touches: ReadonlyMap<string, number>): Promise<void> {
    this.touchNow(touches)
  }

  /** {@link touch}, synchronously. */
  touchNow (touches: ReadonlyMap<string, number>): void {
    if (touches.size > 0) this.#sessions.touchMany(touches)
  }

  async update (id: string, change: SessionChange, fence?: number): Promise<boolean> {
    return this.updateNow(id, change, fence)
  }

  /** {@link update}, synchronously. */
  updateNow (id: string, change: SessionChange, fence?: number): boolean {
    return this.#db.transaction(() => {
      if (!this.#sessions.update(id, change.mode, change.identity, change.subject, change.keycloakSid, fence)) return false
      if (change.tokens === null) this.#tokens.delete(id)
      else if (change.tokens !== undefined) this.#tokens.put(change.tokens)
      return true
    })()
  }

  async end (id: string, reason: string, now: number): Promise<boolean> {
    return this.endNow(id, reason, now)
  }

  /** {@link end}, synchronously. */
  endNow (id: string, reason: string, now: number): boolean {
    return this.#sessions.end(id, reason, now)
  }

  async endWhere (match: SessionMatch, reason: string, now: number, except?: string): Promise<string[]> {
    return this.endWhereNow(match, reason, now, except)
  }

  /** {@link endWhere}, synchronously. */
  endWhereNow (match: SessionMatch, reason: string, now: number, except?: string): string[] {
    return this.#sessions.endWhere(match, reason, now, except)
  }

  async expire (now: number, idleMs: number): Promise<number> {
    return this.#sessions.expire(now, idleMs)
  }

  async purge (now: number, olderThanMs: number): Promise<number> {
    return this.#sessions.purge(now, olderThanMs)
  }

  async countByMode (): Promise<Record<SessionMode, number>> {
    return this.#sessions.countByMode()
  }

  async refreshCandidates (before: number, limit: number): Promise<string[]> {
    return this.#tokens.expiringBefore(before, limit)
  }

  async countUsableTokens (now: number, graceMs: number): Promise<number> {
    return this.countUsableTokensNow(now, graceMs)
  }

  /** {@link countUsableTokens}, synchronously (for the mode, which is computed synchronously). */
  countUsableTokensNow (now: number, graceMs: number): number {
    return this.#tokens.countUsable(now, graceMs)
  }

  async cleanupTokens (now: number, graceMs: number): Promise<number> {
    return this.#tokens.cleanup(now, graceMs)
  }

  onRevoked (listener: RevocationListener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  // Sessions ended by another connection (`sessions invalidate`, `users disable`, a
  // back-channel logout another process took) must stop working at once. PRAGMA data_version
  // tells, for the cost of one statement, whether anyone else wrote; only then is the
  // revocation counter read, and only when it moved are the listeners told.
  pollRevocations (): void {
    if (this.#listeners.size === 0) return
    const version = this.#sessions.dataVersion()
    if (version === this.#seenDataVersion) return
    this.#seenDataVersion = version
    const revocations = this.#sessions.revocations()
    if (revocations === this.#seenRevocations) return
    const first = this.#seenRevocations === -1
    this.#seenRevocations = revocations
    if (first) return
    for (const listener of this.#listeners) listener(null)
  }

  async reserveAttempt (attempt: Attempt, now: number, since: number, policy: LockoutPolicy): Promise<AttemptReservation> {
    return this.reserveAttemptNow(attempt, now, since, policy)
  }

  /** {@link reserveAttempt}, synchronously. */
  reserveAttemptNow (attempt: Attempt, now: number, since: number, policy: LockoutPolicy): AttemptReservation {
    const reservation = this.#attempts.reserve(attempt, now, since, (windows) => lockoutLeft(windows, policy, now))
    return 'id' in reservation ? { id: `sqlite:${reservation.id}` } : reservation
  }

  async settleAttempt (id: string, result: AttemptResult): Promise<void> {
    this.settleAttemptNow(id, result)
  }

  /** {@link settleAttempt}, synchronously; ids this store did not give are ignored. */
  settleAttemptNow (id: string, result: AttemptResult): void {
    const row = /^sqlite:(\d+)$/.exec(id)
    if (row !== null) this.#attempts.settle(Number(row[1]), result)
  }

  async failures (username: string, ip: string | null, since: number): Promise<FailureWindow[]> {
    return this.failuresNow(username, ip, since)
  }

  /** {@link failures}, synchronously. */
  failuresNow (username: string, ip: string | null, since: number): FailureWindow[] {
    const windows = [this.#attempts.userFailures(username, since)]
    if (ip !== null) windows.push(this.#attempts.ipFailures(ip, since))
    return windows
  }

  async purgeAttempts (before: number): Promise<number> {
    return this.#attempts.purge(before)
  }

  async lockRefresh (sessionId: string, ttlMs: number): Promise<RefreshLease | 'held'> {
    return this.lockRefreshNow(sessionId, ttlMs)
  }

  /** {@link lockRefresh}, synchronously. */
  lockRefreshNow (sessionId: string, ttlMs: number): RefreshLease | 'held' {
    const now = this.#clock.now()
    const fence = this.#db.transaction((): number | null => {
      if (this.#db.prepare('SELECT 1 FROM sessions WHERE id = ?').get(sessionId) === undefined) return null
      const row = this.#db.prepare('SELECT fence, expires_at FROM refresh_locks WHERE session_id = ?').get(sessionId) as { fence: number, expires_at: number } | undefined
      if (row !== undefined && row.expires_at > now) return null
      const next = (row?.fence ?? 0) + 1
      this.#db.prepare('INSERT INTO refresh_locks (session_id, fence, expires_at) VALUES (?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET fence = excluded.fence, expires_at = excluded.expires_at')
        .run(sessionId, next, now + ttlMs)
      return next
    }).immediate()
    if (fence === null) return 'held'
    return {
      fence,
      release: async () => {
        this.#db.prepare('UPDATE refresh_locks SET expires_at = 0 WHERE session_id = ? AND fence = ?').run(sessionId, fence)
      }
    }
  }

  health (): StoreHealth {
    return { store: 'sqlite', mode: 'normal', reason: null, pendingReplay: 0 }
  }

  async start (): Promise<void> {
    // Nothing to connect: the file is open.
  }

  async close (): Promise<void> {
    this.#listeners.clear()
  }
}
