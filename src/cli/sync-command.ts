import type { DestinationStream, Logger } from 'pino'
import { systemClock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { NotKeycloakError, UsageError } from '../errors.ts'
import { createKeycloakClient, type KeycloakClient } from '../keycloak/client.ts'
import { createLoggers } from '../log.ts'
import { createMetrics } from '../metrics/registry.ts'
import { KeyRing } from '../store/crypto.ts'
import { openConfiguredDatabase, type Db } from '../store/db.ts'
import type { SyncStats } from '../store/sync-queue.ts'
import { createSync, type SyncParts } from '../sync/create.ts'
import type { SyncWorkerDeps } from '../sync/worker.ts'
import { emit, type Output } from './output.ts'
import { processStopSignals, type StopSignals } from './signals.ts'

/** `sync cleanup` without `--days`: done items older than this many days are removed. */
export const DEFAULT_SYNC_CLEANUP_DAYS = 7
const DAY = 86_400_000

/** Options of {@link runSyncCommand}. */
export interface SyncCommandOptions {
  config: Config
  json: boolean
  days: string | undefined
  allDead: boolean
  /** What stops `sync start`. Default is SIGTERM or SIGINT to this process. */
  stopSignals?: StopSignals
  /** Where log lines go. Default is standard output. */
  logDestination?: DestinationStream
}

/** A database, a Keycloak client (health-checked once) and the sync parts, for one command. */
export interface SyncContext extends SyncParts {
  db: Db
  keycloak: KeycloakClient
  log: Logger
  close: () => void
}

/**
 * Opens what a sync command needs. Keycloak is health-checked once first: the worker only
 * replays while a server is known to be reachable.
 */
export async function openSync (config: Config, options: { logLevel?: Config['log']['level'], onSettled?: SyncWorkerDeps['onSettled'], logDestination?: DestinationStream } = {}): Promise<SyncContext> {
  const { db } = openConfiguredDatabase(config)
  const { log } = createLoggers({ level: options.logLevel ?? config.log.level, ...(options.logDestination !== undefined ? { destination: options.logDestination } : {}) })
  const clock = systemClock
  const metrics = createMetrics()
  const keycloak = createKeycloakClient(config, { db, clock, log, metrics })
  keycloak.jwks.load()
  await keycloak.health.round()
  const parts = createSync(config, { db, ring: new KeyRing(config.secrets.encryption_keys), keycloak, clock, log: log.child({ module: 'sync' }), metrics, ...(options.onSettled !== undefined ? { onSettled: options.onSettled } : {}) })
  return { ...parts, db, keycloak, log, close: () => { keycloak.health.stop(); db.close() } }
}

/**
 * `gatehouse sync status|now|retry|cleanup|start`: the queue an operator reads when asked
 * "where did my password change go?", and the worker run by hand or standalone.
 */
export async function runSyncCommand (sub: string | undefined, args: string[], options: SyncCommandOptions, output: Output): Promise<number> {
  const { config, json } = options
  if (config.keycloak.kind !== 'keycloak') throw new NotKeycloakError(`gatehouse sync ${sub ?? ''}`.trim())
  const withSync = async (logLevel: Config['log']['level'], fn: (ctx: SyncContext) => number | Promise<number>): Promise<number> => {
    const ctx = await openSync(config, { logLevel, ...(options.logDestination !== undefined ? { logDestination: options.logDestination } : {}) })
    try {
      return await fn(ctx)
    } finally {
      ctx.close()
    }
  }
  switch (sub) {
    case 'status': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse sync status [--json]')
      return await withSync('silent', (ctx) => {
        const stats = ctx.queue.stats(Date.now())
        const items = ctx.queue.list().filter((i) => i.status !== 'done').slice(0, 50).map((i) => ({
          id: i.id, user: i.username, operation: i.operation, status: i.status, attempts: i.attempts,
          queued_at: new Date(i.queuedAt).toISOString(), next_attempt_at: new Date(i.nextAttemptAt).toISOString(), last_error: i.lastError
        }))
        emit(output, json, { ...statsJson(stats), keycloak_reachable: ctx.keycloak.pool.reachable(), items }, () => formatStats(stats, ctx.keycloak.pool.reachable(), items))
        return 0
      })
    }
    case 'now': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse sync now [--json]')
      return await withSync('warn', async (ctx) => {
        const reachable = ctx.keycloak.pool.reachable()
        const result = await ctx.worker.cycle()
        emit(output, json, { keycloak_reachable: reachable, ...result }, () => reachable
          ? `replayed: ${result.done} done, ${result.failed} failed (will retry), ${result.dead} dead, ${result.released} given back`
          : 'keycloak is unreachable: nothing replayed')
        return reachable ? 0 : 1
      })
    }
    case 'retry': {
      const id = args[0]
      if ((id === undefined) === !options.allDead || args.length > 1) throw new UsageError('usage: gatehouse sync retry ID | --all-dead')
      return await withSync('silent', (ctx) => {
        if (id !== undefined) {
          const item = ctx.queue.find(id)
          if (item === null) return fail(output, `no such sync item ${JSON.stringify(id)}`)
          if (item.status !== 'failed' && item.status !== 'dead') return fail(output, `sync item ${id} is ${item.status}: only failed or dead items are retried`)
        }
        const { requeued, unrecoverable } = ctx.queue.retry(id !== undefined ? { id } : { allDead: true }, Date.now())
        emit(output, json, { requeued, unrecoverable }, () => [
          `requeued ${requeued.length} item${requeued.length === 1 ? '' : 's'}`,
          ...unrecoverable.map((u) => `not requeued ${u}: its password was erased when it died; the user must change the password again`)
        ].join('\n'))
        return requeued.length === 0 && (id !== undefined || unrecoverable.length > 0) ? 1 : 0
      })
    }
    case 'cleanup': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse sync cleanup [--days N]')
      if (options.days !== undefined && !/^\d+$/.test(options.days)) throw new UsageError(`--days expects a whole number of days, received ${JSON.stringify(options.days)}`)
      const days = options.days === undefined ? DEFAULT_SYNC_CLEANUP_DAYS : Number(options.days)
      return await withSync('silent', (ctx) => {
        const removed = ctx.queue.purgeDone(Date.now() - days * DAY)
        emit(output, json, { removed, days }, () => `removed ${removed} done item${removed === 1 ? '' : 's'} older than ${days} day${days === 1 ? '' : 's'}`)
        return 0
      })
    }
    case 'start': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse sync start')
      const ctx = await openSync(config, options.logDestination !== undefined ? { logDestination: options.logDestination } : {})
      ctx.keycloak.health.start()
      ctx.worker.start()
      ctx.log.info({ owner: ctx.worker.owner }, 'sync worker started')
      // The worker's timers do not hold the process open (inside serve the listeners do); here
      // this does, until a signal.
      const alive = setInterval(() => {}, 2 ** 30)
      return await new Promise<number>((resolve) => {
        (options.stopSignals ?? processStopSignals)((signal) => {
          ctx.log.warn({ signal }, 'sync worker stopping')
          clearInterval(alive)
          void ctx.worker.stop().then(() => { ctx.close(); ctx.log.flush(() => resolve(0)) })
        })
      })
    }
    default:
      throw new UsageError(`unknown sync subcommand ${JSON.stringify(sub ?? '')}: use status, now, retry, cleanup or start`)
  }
}

function fail (output: Output, message: string): number {
  output.err(`gatehouse: ${message}`)
  return 1
}

function statsJson (s: SyncStats): Record<string, unknown> {
  return { by_status: s.byStatus, by_operation: s.byOperation, oldest_pending_seconds: s.oldestPendingSeconds, last_error: s.lastError }
}

function formatStats (s: SyncStats, reachable: boolean, items: Array<Record<string, unknown>>): string {
  const lines = [
    `keycloak: ${reachable ? 'reachable' : 'unreachable (nothing replays until it is back)'}`,
    `queue:    ${Object.entries(s.byStatus).map(([status, n]) => `${n} ${status}`).join(', ')}`,
    `oldest unfinished: ${s.oldestPendingSeconds === null ? '-' : `${s.oldestPendingSeconds}s`}`,
    `last error: ${s.lastError === null ? '-' : `${s.lastError.operation} for ${s.lastError.username} (${s.lastError.status}): ${s.lastError.error}`}`
  ]
  if (s.byOperation.length > 0) lines.push('', 'by operation:', ...s.byOperation.map((o) => `  ${o.operation.padEnd(16)} ${o.status.padEnd(10)} ${o.count}`))
  if (items.length > 0) {
    lines.push('', 'unfinished items:', ...items.map((i) => `  ${String(i.id)}  ${String(i.user).padEnd(16)} ${String(i.operation).padEnd(16)} ${String(i.status).padEnd(10)} attempts ${String(i.attempts)}${i.last_error !== null ? `  ${String(i.last_error)}` : ''}`))
  }
  return lines.join('\n')
}
