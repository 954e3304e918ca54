import type { UserRecord } from '../store/users.ts'
import { UsersRepository } from '../store/users.ts'
import type { SyncContext } from '../cli/sync-command.ts'

/** What happened to one user. */
export type MigrationResult = 'created' | 'linked' | 'already_linked' | 'queued_already' | 'failed' | 'would_create' | 'would_link' | 'would_create_or_link'

/** The summary `users migrate-to-keycloak` prints. */
export interface MigrationSummary {
  dryRun: boolean
  selected: number
  results: Array<{ username: string, result: MigrationResult, keycloakId?: string, reason?: string }>
  counts: Partial<Record<MigrationResult, number>>
  keycloakReachable: boolean
}

/** Options of {@link migrateToKeycloak}. */
export interface MigrationOptions {
  dryRun: boolean
  /** Only users holding one of these roles; all local users when empty. */
  roles: readonly string[]
  /** Progress after each user: how many are settled of how many. */
  progress: (settled: number, total: number, line: string) => void
}

/**
 * Provisions local users into Keycloak through the sync queue's `user_create` (so the same
 * idempotent path as every other write: a user Keycloak already has is linked, not
 * duplicated). Users already linked, or with a creation already queued, are left alone, so a
 * second run creates nothing. Passwords are not carried over (Keycloak cannot take scrypt
 * hashes): with auth.primary local the next password change, or login, pushes one.
 */
export async function migrateToKeycloak (ctx: SyncContext, options: MigrationOptions): Promise<MigrationSummary> {
  const users = new UsersRepository(ctx.db)
  const selected = users.list().filter((u) => u.source === 'local' && u.enabled && (options.roles.length === 0 || options.roles.some((r) => u.roles.includes(r))))
  const reachable = ctx.keycloak.pool.reachable()
  const results: MigrationSummary['results'] = []
  const todo: UserRecord[] = []
  for (const user of selected) {
    if (user.keycloakId !== null) results.push({ username: user.username, result: 'already_linked', keycloakId: user.keycloakId })
    else if (ctx.queue.unfinished(user.username, 'user_create').length > 0) results.push({ username: user.username, result: 'queued_already' })
    else todo.push(user)
  }
  let settled = results.length
  for (const r of results) options.progress(settled, selected.length, `${r.username}: ${r.result.replace('_', ' ')}`)

  if (options.dryRun) {
    for (const user of todo) {
      let result: MigrationResult = 'would_create_or_link'
      if (reachable) {
        const found = await ctx.api.call(async (kc) => await kc.users.find({ username: user.username, exact: true }))
        result = found.some((u) => u.username?.toLowerCase() === user.username.toLowerCase()) ? 'would_link' : 'would_create'
      }
      results.push({ username: user.username, result })
      options.progress(++settled, selected.length, `${user.username}: ${result.replaceAll('_', ' ')}`)
    }
    return summarise(true, selected.length, results, reachable)
  }

  const ids = new Map<string, UserRecord>()
  for (const user of todo) {
    const id = ctx.queue.enqueue({ username: user.username, operation: 'user_create', payload: { email: user.email, first_name: user.firstName, last_name: user.lastName, source: 'migrate-to-keycloak' } }, Date.now())
    ids.set(id, user)
  }
  if (reachable && todo.length > 0) await ctx.worker.cycle()
  for (const [id, user] of ids) {
    const item = ctx.queue.find(id)
    const keycloakId = typeof item?.payload.keycloak_id === 'string' ? item.payload.keycloak_id : undefined
    const linked = item?.operation === 'user_create' && item.payload.linked === true
    const result: MigrationResult = item?.status === 'done' ? (linked ? 'linked' : 'created') : 'failed'
    results.push({ username: user.username, result, ...(keycloakId !== undefined ? { keycloakId } : {}), ...(item?.status !== 'done' ? { reason: item?.lastError ?? (reachable ? 'not replayed' : 'keycloak unreachable: queued, replays when it is back') } : {}) })
    options.progress(++settled, selected.length, `${user.username}: ${result}${item?.status !== 'done' ? ` (${item?.lastError ?? 'queued'})` : ''}`)
  }
  return summarise(false, selected.length, results, reachable)
}

function summarise (dryRun: boolean, selected: number, results: MigrationSummary['results'], keycloakReachable: boolean): MigrationSummary {
  const counts: MigrationSummary['counts'] = {}
  for (const r of results) counts[r.result] = (counts[r.result] ?? 0) + 1
  return { dryRun, selected, results, counts, keycloakReachable }
}
