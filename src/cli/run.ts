import { resolve } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import type { DestinationStream } from 'pino'
import { ConfigError, GatehouseError, PolicyError, UsageError } from '../errors.ts'
import { DEFAULT_CONFIG_PATH } from '../config/load.ts'
import { createLogger, createLoggers } from '../log.ts'
import { PIPE_BUF_BYTES } from '../log-sink.ts'
import type { Config } from '../config/schema.ts'
import { openConfiguredDatabase } from '../store/db.ts'
import { runPrimary } from '../cluster/primary.ts'
import { announceListening, onReloadMessage, shareMetrics, workerRole, workerStopSignals } from '../cluster/worker.ts'
import { VERSION } from '../version.ts'
import { loadForServe, runConfigCommand } from './config-command.ts'
import { processOutput, type Output } from './output.ts'
import { startServer } from '../server.ts'
import { runSessionsCommand } from './sessions-command.ts'
import { processReloadSignals, processStopSignals, type ReloadSignals, type StopSignals } from './signals.ts'
import { runStatusCommand } from './status-command.ts'
import { runUsersCommand } from './users-command.ts'
import { runSyncCommand } from './sync-command.ts'
import { runTokensCommand } from './tokens-command.ts'
import { runPolicyCommand } from './policy-command.ts'
import { runDoctorCommand } from './doctor-command.ts'
import { systemClock, type Clock } from '../clock.ts'
import { commandSpec, commandUsage, GLOBAL_OPTIONS, mainUsage, OPTIONS, type CommandForm, type CommandSpec, type OptionName } from './usage.ts'

/**
 * Everything a command may read or touch outside its arguments. `main.ts` passes the real
 * process; tests pass their own, so a command run in-process never reads `process.env`, the
 * working directory or the signal handlers of the test runner.
 */
export interface CliContext {
  /** Environment variables: `GATEHOUSE_CONFIG`, `${VAR}` substitution, `GATEHOUSE_ENV`. */
  env: NodeJS.ProcessEnv
  /** Where results and errors are written. Default is standard output and error. */
  output?: Output
  /** The directory a relative `--config` path is read from. Default is `process.cwd()`. */
  cwd?: string
  /** Where `users add|passwd` read the password. Default is `process.stdin`. */
  stdin?: Readable & { isTTY?: boolean }
  /** Where password prompts are written. Default is `process.stderr`. */
  prompts?: Writable
  /** Draw progress bars (standard error is a terminal). Default is false. */
  progressTty?: boolean
  /** What stops `serve` and `sync start`. Default is SIGTERM or SIGINT to this process. */
  stopSignals?: StopSignals
  /** What makes `serve` reload its policies. Default is SIGHUP to this process. */
  reloadSignals?: ReloadSignals
  /** Where `serve` and `sync` write their log lines. Default is standard output. */
  logDestination?: DestinationStream
  /** The clock `doctor` reads (clock skew against Keycloak). Default is the system clock. */
  clock?: Clock
}

/** What the command line asked for, once it is known to be well formed. */
interface Parsed {
  spec: CommandSpec
  form: CommandForm
  /** Positionals after the command and subcommand. */
  args: string[]
  values: Partial<Record<OptionName, string | boolean | string[]>>
}

type Request = { kind: 'help', text: string } | { kind: 'version' } | { kind: 'run', parsed: Parsed }

/**
 * Runs one command line and resolves to its exit code (0 success, 1 failure, 2 invalid usage
 * or configuration; `status` also 3 and 4, see `STATUS_EXIT_CODES` in usage.ts). `serve` and
 * `sync start` resolve only after a stop signal.
 */
export async function runCli (argv: string[], context: CliContext): Promise<number> {
  const output = context.output ?? processOutput
  const { env } = context
  try {
    const request = parseCommandLine(argv)
    if (request.kind === 'help') {
      output.out(request.text)
      return 0
    }
    if (request.kind === 'version') {
      output.out(VERSION)
      return 0
    }
    const { spec, form, args, values } = request.parsed
    const configPath = resolve(context.cwd ?? process.cwd(), str(values.config) ?? env.GATEHOUSE_CONFIG ?? DEFAULT_CONFIG_PATH)
    const json = values.json === true
    const sub = form.sub ?? undefined
    const stopSignals = context.stopSignals ?? processStopSignals
    const logDestination = context.logDestination
    switch (spec.name) {
      case 'version':
        if (args.length > 0) throw new UsageError('usage: gatehouse version')
        output.out(VERSION)
        return 0
      case 'config':
        return runConfigCommand(sub, { configPath, json, env }, output)
      case 'serve':
        if (args.length > 0) throw new UsageError('usage: gatehouse serve [-c PATH]')
        return await serve(configPath, env, stopSignals, context.reloadSignals ?? processReloadSignals, logDestination)
      case 'status':
        if (args.length > 0) throw new UsageError('usage: gatehouse status [--json]')
        return await runStatusCommand(loadForServe(configPath, env).config, json, output)
      case 'users':
        return await runUsersCommand(sub, args, {
          configPath, env, json, email: str(values.email), roles: list(values.role), groups: list(values.group),
          stdin: context.stdin ?? process.stdin, prompts: context.prompts ?? process.stderr,
          dryRun: values['dry-run'] === true, batchSize: str(values['batch-size']), progressTty: context.progressTty === true
        }, output)
      case 'sessions':
        return await runSessionsCommand(sub, args, { configPath, env, json, all: values.all === true, days: str(values.days) }, output)
      case 'policy':
        return await runPolicyCommand(sub, args, {
          configPath, env, json, stdin: context.stdin ?? process.stdin,
          user: str(values.user), token: str(values.token), roles: str(values.roles), groups: str(values.groups),
          email: str(values.email), method: str(values.method), path: str(values.path), host: str(values.host)
        }, output)
      case 'sync':
        return await runSyncCommand(sub, args, {
          config: loadForServe(configPath, env).config, json, days: str(values.days), allDead: values['all-dead'] === true,
          stopSignals, ...(logDestination !== undefined ? { logDestination } : {})
        }, output)
      case 'tokens':
        return await runTokensCommand(sub, args, {
          configPath, env, json, roles: str(values.roles), description: str(values.description), expiresDays: str(values['expires-days']),
          graceDays: str(values['grace-days']), autoRotateDays: str(values['auto-rotate-days']), previousOnly: values['previous-only'] === true, days: str(values.days),
          ...(context.clock !== undefined ? { clock: context.clock } : {})
        }, output)
      case 'doctor':
        return await runDoctorCommand(sub, args, { configPath, env, json, clock: context.clock ?? systemClock, stdin: context.stdin ?? process.stdin }, output)
      default:
        // A command in the table without a case here: ours to fix, not the user's.
        throw new Error(`command ${spec.name} is not wired`)
    }
  } catch (err) {
    return reportError(err, output)
  }
}

const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined)
const list = (value: unknown): string[] | undefined => (Array.isArray(value) ? value as string[] : undefined)

/**
 * Reads the command line against {@link COMMANDS}. Parsed leniently first, so that every
 * mistake is reported in our own words, one line naming the command it was meant for, instead
 * of `parseArgs`'s text: an unknown command or subcommand, an unknown or misplaced option, an
 * option missing its value or given one it does not take.
 */
export function parseCommandLine (argv: string[]): Request {
  const { values, tokens } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false, tokens: true })
  const positionals = tokens.filter((t) => t.kind === 'positional').map((t) => t.value)
  const [command, subName, ...rest] = positionals
  const spec = command === undefined ? undefined : commandSpec(command)
  const helpAsked = values.help === true

  if (command === undefined || command === 'help') {
    checkOptions(tokens, GLOBAL_OPTIONS, null, 'gatehouse --help', null)
    const topic = command === 'help' ? subName : undefined
    if (topic !== undefined) {
      const about = commandSpec(topic)
      if (about === undefined) throw new UsageError(`unknown command ${JSON.stringify(topic)}; run gatehouse --help`)
      return { kind: 'help', text: commandUsage(about) }
    }
    if (values.version === true && !helpAsked) return { kind: 'version' }
    if (command === undefined && !helpAsked) throw new UsageError('no command given; run gatehouse --help')
    return { kind: 'help', text: mainUsage() }
  }
  if (spec === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}; run gatehouse --help`)
  const hasSubs = spec.forms.some((f) => f.sub !== null)
  const form = hasSubs ? spec.forms.find((f) => f.sub === subName) : spec.forms[0]
  // --help wins over every other mistake: it is what someone who made one types next.
  if (helpAsked) return { kind: 'help', text: commandUsage(spec) }
  if (values.version === true) return { kind: 'version' }
  const helpHint = `gatehouse ${spec.name} --help`
  const subs = spec.forms.map((f) => f.sub).filter((s) => s !== null)
  if (form === undefined) {
    if (subName === undefined) throw new UsageError(`${spec.name} needs a subcommand: ${orList(subs)}; run ${helpHint}`)
    throw new UsageError(`unknown ${spec.name} subcommand ${JSON.stringify(subName)}: use ${orList(subs)}; run ${helpHint}`)
  }
  checkOptions(tokens, [...GLOBAL_OPTIONS, ...form.options], form.sub === null ? spec.name : `${spec.name} ${form.sub}`, helpHint, spec)
  const args = hasSubs ? rest : positionals.slice(1)
  return { kind: 'run', parsed: { spec, form, args, values: values as Parsed['values'] } }
}

type Token = ReturnType<typeof parseArgs>['tokens'] extends Array<infer T> | undefined ? T : never

function checkOptions (tokens: readonly Token[], allowed: readonly OptionName[], where: string | null, helpHint: string, spec: CommandSpec | null): void {
  for (const token of tokens) {
    if (token.kind !== 'option') continue
    const name = token.name as OptionName
    const known = Object.hasOwn(OPTIONS, name)
    if (!known) throw new UsageError(`unknown option ${token.rawName}${where === null ? '' : ` for "${where}"`}; run ${helpHint}`)
    if (!allowed.includes(name)) {
      const elsewhere = (spec?.forms ?? []).filter((f) => f.options.includes(name)).map((f) => `${spec?.name ?? ''} ${f.sub ?? ''}`.trim())
      throw new UsageError(`option ${token.rawName} does not apply to ${where === null ? 'gatehouse without a command' : `"${where}"`}${elsewhere.length > 0 ? ` (only to ${andList(elsewhere)})` : ''}; run ${helpHint}`)
    }
    const type = OPTIONS[name].type
    if (type === 'boolean' && token.inlineValue === true) throw new UsageError(`option ${token.rawName} takes no value; run ${helpHint}`)
    if (type === 'string') {
      // As parseArgs's strict mode: `--email --role x` is a forgotten value, not the email "--role".
      // A lone `-` is a value: standard input, by the usual convention (`--token -`).
      if (token.value === undefined || (token.inlineValue === false && token.value.startsWith('-') && token.value !== '-')) {
        throw new UsageError(`option ${token.rawName} needs a value${token.value === undefined ? '' : ` (to give one starting with -, write ${token.rawName}=${token.value})`}; run ${helpHint}`)
      }
    }
  }
}

function orList (items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} or ${items.at(-1) ?? ''}`
}

function andList (items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1) ?? ''}`
}

async function serve (configPath: string, env: NodeJS.ProcessEnv, stopSignals: StopSignals, reloadSignals: ReloadSignals, destination: DestinationStream | undefined): Promise<number> {
  const { config, policy } = loadForServe(configPath, env)
  const role = workerRole(env)
  if (role === null && config.server.workers > 1) return await serveCluster(config, stopSignals, reloadSignals, destination)
  // A worker shares standard output with the others: writes stay below PIPE_BUF so that no two
  // workers' lines are ever interleaved mid-line.
  const { log, access } = createLoggers({
    level: config.log.level,
    ...(destination !== undefined ? { destination } : {}),
    ...(role !== null ? { fields: { worker: role.slot, pid: process.pid }, maxWriteBytes: PIPE_BUF_BYTES } : {})
  })
  const server = await startServer(config, {
    log,
    accessLog: access,
    policy,
    ...(role !== null ? { worker: role, metricsSource: shareMetrics } : {})
  })
  if (role !== null) announceListening(server.urls)
  const stops = role === null ? stopSignals : workerStopSignals(stopSignals)
  // SIGHUP reloads the policies (the configuration file itself is read at start only); a
  // worker also reloads when the primary passes a SIGHUP on.
  const reload = (): void => { server.app.policies.reload('signal') }
  const offSignal = reloadSignals(reload)
  const offMessage = role === null ? () => {} : onReloadMessage(reload)
  return await new Promise<number>((resolve) => {
    stops((signal) => {
      offSignal()
      offMessage()
      log.warn({ signal }, 'shutting down')
      // Lines still queued must reach standard output before the process exits.
      const done = (code: number): void => log.flush(() => resolve(code))
      server.stop().then(() => done(0), (err: unknown) => { log.error({ err }, 'shutdown failed'); done(1) })
    })
  })
}

/**
 * `server.workers` > 1: the database is opened (and migrated) here once, before any worker
 * can race another to a migration, then this process becomes the cluster's primary.
 */
async function serveCluster (config: Config, stopSignals: StopSignals, reloadSignals: ReloadSignals, destination: DestinationStream | undefined): Promise<number> {
  const log = createLogger({ level: config.log.level, fields: { worker: 0, pid: process.pid }, maxWriteBytes: PIPE_BUF_BYTES, ...(destination !== undefined ? { destination } : {}) })
  const { db, migration } = openConfiguredDatabase(config)
  db.close()
  if (migration.applied.length > 0) log.info({ from: migration.from, to: migration.to, applied: migration.applied }, 'database migrated')
  const code = await runPrimary({ workers: config.server.workers, log, stopSignals, reloadSignals, shutdownTimeoutMs: config.server.shutdown_timeout_ms })
  return await new Promise<number>((resolve) => log.flush(() => resolve(code)))
}

function reportError (err: unknown, output: Output): number {
  if (err instanceof ConfigError || err instanceof PolicyError || err instanceof UsageError) {
    output.err(`gatehouse: ${err.message}`)
    return 2
  }
  if (err instanceof GatehouseError) {
    output.err(`gatehouse: ${err.message} (${err.code})`)
    return 1
  }
  output.err(`gatehouse: ${(err as Error).message ?? String(err)}`)
  return 1
}
