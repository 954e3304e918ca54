import type { SyncItem } from '../store/sync-queue.ts'

/** Whether this replica may replay an item now (see {@link SyncOrder}). */
export type SyncTurn =
  /** Replay it; call `end` once done (success or not). */
  | { kind: 'apply', end: () => Promise<void> }
  /** A newer write of the same kind for this user was already replayed (by another replica): skip it. */
  | { kind: 'superseded' }
  /** Another replica is replaying this user's items right now: give it back and come again. */
  | { kind: 'busy' }

/**
 * One user's order across replicas (issue 14 item 5). Each replica keeps its own sync queue in
 * its SQLite file, replayed only by its own worker (so no item is replayed twice at once); a
 * user's writes taken by different replicas are ordered by the time they were queued: a
 * replica replays a user's item only while it holds that user's replay lease, and an item older
 * than one of the same kind already replayed elsewhere is superseded (its write is one the user
 * has since overwritten). Absent with `store.sessions: sqlite` (one replica: the queue's own
 * per-user order is the whole order).
 */
export interface SyncOrder {
  begin: (item: Pick<SyncItem, 'username' | 'queuedAt'>, kind: string, leaseMs: number) => Promise<SyncTurn>
}

/**
 * What an item overwrites, for ordering (null: nothing; replayed in any order, as a logout).
 * Two items of one user with the same kind write the same thing in Keycloak; the later wins.
 */
export function orderKind (item: SyncItem): string | null {
  switch (item.operation) {
    case 'password_change': return 'password'
    case 'user_update': return 'profile'
    case 'user_disable': return 'profile'
    case 'group_membership': return `group:${item.payload.group}`
    case 'user_create':
    case 'logout_user':
      return null
  }
}
