import type { SyncOrder } from '../sync/order.ts'
import type { Attempt, FailureWindow } from './login-attempts.ts'
import type { SessionMatch, SessionMode, SessionRecord } from './sessions.ts'
import type { CachedTokens } from './token-cache.ts'

/** Which implementation of {@link SessionStore} is configured (`store.sessions`). */
export type StoreKind = 'sqlite' | 'redis'

/**
 * How a store is doing: `normal`; or `degraded`, when the shared store (Redis) is unreachable
 * and sessions carry on from the local SQLite copy, with revocations kept for replay, or when
 * it refuses the store's commands (`ERR_STORE_REDIS`: an ACL, a full memory).
 */
export type StoreMode = 'normal' | 'degraded'

/** A session with its cached tokens: what the store keeps as one unit. */
export interface StoredSession {
  record: SessionRecord
  tokens: CachedTokens | null
}

/** What a session's Keycloak part changes to (a refresh, a fall to cached or local). */
export interface SessionChange {
  mode: SessionMode
  identity: SessionRecord['identity']
  subject: string | null
  keycloakSid: string | null
  /** New tokens; null drops them; absent leaves them as they are. */
  tokens?: CachedTokens | null
}

/**
 * The lockout rule as data, so a store can apply it where the counters are (in one Redis
 * script, in one SQLite transaction): `maxFailures` failures lock for `lockoutMs` after the
 * latest of them.
 */
export interface LockoutPolicy {
  maxFailures: number
  lockoutMs: number
}

/** What {@link SessionStore.reserveAttempt} gives: a lockout, or the attempt's id to settle. */
export type AttemptReservation = { lockedForSeconds: number } | { id: string }

/** How a reserved attempt ended (see {@link SessionStore.settleAttempt}). */
export type AttemptResult = 'success' | 'failure' | 'void'

/**
 * A held refresh lock. `fence` grows with every lock ever granted for the session: a write
 * carrying a smaller fence than one already written is refused, so a holder whose lease ran
 * out (a long pause) cannot overwrite what a later holder stored (Kleppmann, "How to do
 * distributed locking", 2016).
 */
export interface RefreshLease {
  fence: number
  /** Gives the lock back (only if this lease still holds it). */
  release: () => Promise<void>
}

/** What a revocation listener hears: the ids ended elsewhere, or null for "anything may have ended". */
export type RevocationListener = (sessionIds: readonly string[] | null) => void

/** A store's state for `/status`, `gatehouse status` and `gatehouse_store_mode`. */
export interface StoreHealth {
  store: StoreKind
  mode: StoreMode
  /** Why it is degraded, or null. */
  reason: string | null
  /** Revocations and sessions made during an outage, waiting to be replayed to the shared store. */
  pendingReplay: number
}

/**
 * Everything sessions need, as one async unit (issue 14): sessions with their cached tokens,
 * revocations, lockout counters and the refresh lock. SQLite ({@link SqliteSessionStore}) is
 * the first implementation and the floor; Redis the shared one for several replicas. One suite,
 * `test/contracts/session-store.ts`, runs against every implementation.
 *
 * Secrets: a session is found by the SHA-256 of its secret, never the secret; tokens are
 * encrypted with the key ring wherever they are kept.
 */
export interface SessionStore {
  readonly kind: StoreKind

  /** Stores a new session (and its tokens, if any) under the hash of its secret. */
  insert: (record: SessionRecord, secretHash: Buffer, tokens: CachedTokens | null) => Promise<void>
  /** The live (not ended) session whose secret hashes to `secretHash`, with its tokens, or null. */
  findLive: (secretHash: Buffer) => Promise<StoredSession | null>
  /** A session by id, ended or not, with its tokens (none once ended). */
  find: (id: string) => Promise<StoredSession | null>
  /** Sessions, newest first: of one user or all; live only unless `includeEnded`. */
  list: (options?: { username?: string, includeEnded?: boolean }) => Promise<SessionRecord[]>
  /** Writes last-seen times (never moving one back). */
  touch: (touches: ReadonlyMap<string, number>) => Promise<void>
  /**
   * Changes a live session's mode, identity and tokens. With `fence`, refused (false) when a
   * refresh lock with a larger fence has written since. Returns whether it was written.
   */
  update: (id: string, change: SessionChange, fence?: number) => Promise<boolean>
  /** Ends one session and deletes its tokens; tells every replica. Returns whether it was live. */
  end: (id: string, reason: string, now: number) => Promise<boolean>
  /**
   * Ends every live session matching a Keycloak session id, subject or user name (any of
   * them), but `except`, with their tokens; tells every replica; returns their ids.
   */
  endWhere: (match: SessionMatch, reason: string, now: number, except?: string) => Promise<string[]>
  /** Ends sessions past their absolute end or idle for `idleMs`; returns how many. */
  expire: (now: number, idleMs: number) => Promise<number>
  /** Deletes sessions that ended more than `olderThanMs` ago (live ones never); returns how many. */
  purge: (now: number, olderThanMs: number) => Promise<number>
  /** Live sessions by mode. */
  countByMode: (now: number) => Promise<Record<SessionMode, number>>
  /** Live sessions whose access token expires before `before` and that hold a refresh token. */
  refreshCandidates: (before: number, limit: number) => Promise<string[]>
  /** Token sets of live sessions still usable: fresh, or cached less than `graceMs` ago. */
  countUsableTokens: (now: number, graceMs: number) => Promise<number>
  /** Removes tokens past their grace period and those of ended sessions; returns how many. */
  cleanupTokens: (now: number, graceMs: number) => Promise<number>

  /** Listens for sessions ended elsewhere (another replica, the CLI); returns the unsubscribe. */
  onRevoked: (listener: RevocationListener) => () => void
  /**
   * Looks, synchronously and cheaply, for revocations another process made that were not
   * pushed (SQLite: `PRAGMA data_version`); listeners hear of them. Called on the session path.
   */
  pollRevocations: () => void

  /**
   * Checks the lockout and counts the attempt as a failure, atomically (no other request or
   * replica can slip an attempt in between), unless the user or the address is locked out.
   * `since` bounds the failures that count (ms).
   */
  reserveAttempt: (attempt: Attempt, now: number, since: number, policy: LockoutPolicy) => Promise<AttemptReservation>
  /** Settles a reserved attempt: success resets the user's count, void forgets the attempt. */
  settleAttempt: (id: string, result: AttemptResult) => Promise<void>
  /** Failures of the user (since their last success) and of the address, since `since`. */
  failures: (username: string, ip: string | null, since: number) => Promise<FailureWindow[]>
  /** Deletes attempts older than `before`; returns how many (where the store counts them). */
  purgeAttempts: (before: number) => Promise<number>

  /**
   * Takes the session's refresh lock for `ttlMs`: a lease, `held` when another holder has it,
   * or `unavailable` when the store that would share it cannot be reached (then nobody may
   * refresh: the local copy's refresh token may be one another replica already rotated).
   * Across replicas only one holder refreshes, so a rotated refresh token is sent once.
   */
  lockRefresh: (sessionId: string, ttlMs: number) => Promise<RefreshLease | 'held' | 'unavailable'>

  /** Each user's sync-queue order across replicas, when the store is shared (Redis); else absent. */
  readonly syncOrder?: SyncOrder

  /** The store's state now (synchronous: read from memory). */
  health: () => StoreHealth
  /** Starts background work (connections, replay); resolves when the store is usable. */
  start: () => Promise<void>
  /** Stops background work and closes connections (not the SQLite file, which its owner closes). */
  close: () => Promise<void>
}

/** Counts per mode, all zero. */
export function emptyModeCounts (): Record<SessionMode, number> {
  return { keycloak: 0, cached: 0, local: 0 }
}

/** Seconds a lockout has left given failure windows, or null when none is locked. */
export function lockoutLeft (windows: readonly FailureWindow[], policy: LockoutPolicy, now: number): number | null {
  let until = 0
  for (const w of windows) {
    if (w.count >= policy.maxFailures && w.latest !== null) until = Math.max(until, w.latest + policy.lockoutMs)
  }
  return until > now ? Math.ceil((until - now) / 1000) : null
}
