import { systemClock, type Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { UsageError } from '../errors.ts'
import { createLogger } from '../log.ts'
import { ServiceTokenService, type ServiceTokenView } from '../service-token/service.ts'
import { AuditLogRepository } from '../store/audit-log.ts'
import { KeyRing } from '../store/crypto.ts'
import { RedisServiceTokenShare } from '../store/redis-service-tokens.ts'
import { RedisSessionStore } from '../store/redis-session-store.ts'
import { SqliteSessionStore } from '../store/sqlite-session-store.ts'
import { openConfiguredDatabase } from '../store/db.ts'
import { loadForServe } from './config-command.ts'
import { emit, formatTable, type Output } from './output.ts'

/** Revoked or expired tokens older than this many days are purged by `tokens cleanup` without `--days`. Default is 30. */
export const DEFAULT_TOKENS_CLEANUP_DAYS = 30

/** Options of {@link runTokensCommand}, as typed on the command line. */
export interface TokensCommandOptions {
  configPath: string
  env?: NodeJS.ProcessEnv
  json: boolean
  roles?: string
  description?: string
  expiresDays?: string
  graceDays?: string
  autoRotateDays?: string
  previousOnly?: boolean
  days?: string
  /** Default is the system clock. */
  clock?: Clock
}

// Redis went away between reading the token and writing it (rare: a create or rotate is
// refused when Redis is unreachable from the start).
const QUEUED = 'Redis became unreachable while this was saved: it works on this replica now, and on the others once Redis is back (queued).'

const USAGE = {
  create: 'usage: gatehouse tokens create NAME --roles a,b [--expires-days N] [--description TEXT] [--auto-rotate-days N]',
  rotate: 'usage: gatehouse tokens rotate NAME [--grace-days N]',
  revoke: 'usage: gatehouse tokens revoke NAME [--previous-only]',
  list: 'usage: gatehouse tokens list [--json]',
  cleanup: 'usage: gatehouse tokens cleanup [--days N]'
} as const

/** `gatehouse tokens create|rotate|revoke|list|cleanup`. */
export async function runTokensCommand (sub: string | undefined, args: string[], options: TokensCommandOptions, output: Output): Promise<number> {
  const name = (): string => {
    const given = args[0]?.trim()
    if (args.length !== 1 || given === undefined || given === '') throw new UsageError(USAGE[sub as keyof typeof USAGE])
    return given
  }
  switch (sub) {
    case 'create': {
      const token = name()
      if (options.roles === undefined) throw new UsageError(`tokens create needs --roles; ${USAGE.create}`)
      const expiresDays = whole(options.expiresDays, '--expires-days', 1)
      const autoRotateDays = whole(options.autoRotateDays, '--auto-rotate-days', 1)
      return await withService(options, async (service, config) => {
        const { token: secret, record, queued } = await service.create({
          name: token,
          roles: options.roles?.split(',') ?? [],
          description: options.description ?? null,
          ...(expiresDays !== undefined ? { expiresDays } : {}),
          autoRotateDays: autoRotateDays ?? null,
          via: 'cli'
        })
        const view = service.list().find((v) => v.name === record.name) as ServiceTokenView
        if (options.json) {
          emit(output, true, { ...view, token: secret, queued }, () => '')
        } else {
          // The token alone on standard output, so `TOKEN=$(gatehouse tokens create ...)` works.
          output.out(secret)
          output.err(`created service token ${view.name} (roles ${view.roles.join(',')}; expires ${view.expires_at})${autoRotation(view, config)}.\nThe token is shown this once: Gatehouse keeps only its hash.${queued ? `\n${QUEUED}` : ''}`)
        }
        return 0
      })
    }
    case 'rotate': {
      const token = name()
      const graceDays = decimal(options.graceDays, '--grace-days')
      return await withService(options, async (service) => {
        const { token: secret, record, replacedPrevious, queued } = await service.rotate(token, { ...(graceDays !== undefined ? { graceDays } : {}), via: 'cli' })
        const view = service.list().find((v) => v.name === record.name) as ServiceTokenView
        if (options.json) {
          emit(output, true, { ...view, token: secret, replaced_live_previous: replacedPrevious, queued }, () => '')
        } else {
          output.out(secret)
          output.err([
            `rotated service token ${view.name}: the new token expires ${view.expires_at};`,
            `the previous one (${view.previous_id ?? '-'}) stays valid until ${view.previous_valid_until ?? 'now'}.`,
            ...(replacedPrevious ? ['The token before it was still inside its grace period and stopped working now.'] : []),
            'The token is shown this once: Gatehouse keeps only its hash.',
            ...(queued ? [QUEUED] : [])
          ].join('\n'))
        }
        return 0
      })
    }
    case 'revoke': {
      const token = name()
      return await withService(options, async (service) => {
        const previousOnly = options.previousOnly === true
        const { changed, record, queued } = await service.revoke(token, { previousOnly, via: 'cli' })
        emit(output, options.json, { name: record.name, previous_only: previousOnly, changed, queued, revoked_at: record.revokedAt === null ? null : new Date(record.revokedAt).toISOString() }, () => (previousOnly
          ? (changed ? `the previous token of ${record.name} no longer works; the current one is unchanged` : `${record.name} had no previous token still valid`)
          : (changed ? `revoked service token ${record.name}: it is refused from the next request on` : `service token ${record.name} was already revoked`)) +
          (queued ? '\nRedis is unreachable: refused now by the processes on this replica\'s database; the other replicas refuse it once Redis is back (queued, never dropped).' : ''))
        return 0
      })
    }
    case 'list':
      if (args.length !== 0) throw new UsageError(USAGE.list)
      return await withService(options, async (service) => {
        const views = service.list()
        emit(output, options.json, views, () => views.length === 0 ? 'no service tokens' : formatTokens(views))
        return 0
      })
    case 'cleanup': {
      if (args.length !== 0) throw new UsageError(USAGE.cleanup)
      const days = whole(options.days, '--days', 0) ?? DEFAULT_TOKENS_CLEANUP_DAYS
      return await withService(options, async (service) => {
        const report = await service.cleanup(days)
        emit(output, options.json, report, () => [
          `forgot ${report.previous_cleared} previous token${report.previous_cleared === 1 ? '' : 's'} past the grace period`,
          `purged ${report.purged} token${report.purged === 1 ? '' : 's'} revoked or expired more than ${days} day${days === 1 ? '' : 's'} ago`
        ].join('\n'))
        return 0
      })
    }
    default:
      throw new UsageError(`unknown tokens subcommand ${JSON.stringify(sub ?? '')}: use create, rotate, revoke, list or cleanup`)
  }
}

async function withService (options: TokensCommandOptions, fn: (service: ServiceTokenService, config: Config) => Promise<number>): Promise<number> {
  const { config } = loadForServe(options.configPath, options.env)
  const { db } = openConfiguredDatabase(config)
  const clock = options.clock ?? systemClock
  const log = createLogger({ level: 'silent' })
  // With store.sessions redis, through the shared copy, as serve does: a change reaches every
  // replica (issue 16). The store's start reconciles, so changes queued here while Redis was
  // away are merged first.
  const store = config.store.sessions === 'redis'
    ? new RedisSessionStore({ redis: config.store.redis, local: new SqliteSessionStore(db, new KeyRing(config.secrets.encryption_keys), clock), ring: new KeyRing(config.secrets.encryption_keys), clock, log })
    : null
  try {
    const service = new ServiceTokenService({
      db,
      clock,
      log,
      audit: new AuditLogRepository(db),
      config: config.service_tokens,
      ...(store !== null ? { shared: new RedisServiceTokenShare(store) } : {})
    })
    await store?.start()
    return await fn(service, config)
  } finally {
    await store?.close()
    db.close()
  }
}

function whole (value: string | undefined, option: string, minimum: number): number | undefined {
  if (value === undefined) return undefined
  if (!/^\d+$/.test(value.trim()) || Number(value) < minimum) throw new UsageError(`${option} expects a whole number of days${minimum > 0 ? ` (at least ${minimum})` : ''}, received ${JSON.stringify(value)}`)
  return Number(value)
}

function decimal (value: string | undefined, option: string): number | undefined {
  if (value === undefined) return undefined
  if (!/^\d+(\.\d+)?$/.test(value.trim())) throw new UsageError(`${option} expects a number of days (0 or more), received ${JSON.stringify(value)}`)
  return Number(value)
}

function autoRotation (view: ServiceTokenView, config: Config): string {
  if (view.auto_rotate_days === null) return ''
  const a = config.service_tokens.auto_rotate
  const delivered = a.output_dir !== undefined || a.hook !== undefined
  return `; rotated automatically ${view.auto_rotate_days} days before expiry${delivered ? '' : ' once service_tokens.auto_rotate has an output_dir or a hook (none is configured)'}`
}

function formatTokens (views: ServiceTokenView[]): string {
  return formatTable(views, [
    { header: 'name', value: (v) => v.name },
    { header: 'id', value: (v) => v.id },
    { header: 'state', value: (v) => v.state },
    { header: 'roles', value: (v) => v.roles.join(',') },
    { header: 'created', value: (v) => v.created_at },
    { header: 'expires', value: (v) => v.expires_at },
    { header: 'last used', value: (v) => v.last_used_at },
    { header: 'previous', value: (v) => (v.previous_live ? `live until ${v.previous_valid_until ?? ''}` : null) },
    { header: 'auto-rotate', value: (v) => (v.auto_rotate_days === null ? null : `${v.auto_rotate_days}d`) }
  ])
}
