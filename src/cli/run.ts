import type { Readable, Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import { ConfigError, GatehouseError, PolicyError, UsageError } from '../errors.ts'
import { DEFAULT_CONFIG_PATH } from '../config/load.ts'
import { createLoggers } from '../log.ts'
import { VERSION } from '../version.ts'
import { loadForServe, runConfigCommand } from './config-command.ts'
import { processOutput, type Output } from './output.ts'
import { startServer } from './serve.ts'
import { DEFAULT_CLEANUP_DAYS, runSessionsCommand } from './sessions-command.ts'
import { runStatusCommand } from './status-command.ts'
import { runUsersCommand } from './users-command.ts'
import { DEFAULT_SYNC_CLEANUP_DAYS, runSyncCommand } from './sync-command.ts'

const USAGE = `gatehouse ${VERSION}: authentication sidecar for apps behind Keycloak

usage: gatehouse <command> [options]

commands:
  serve                 run the proxy and admin listeners
  config validate       check the configuration and policies exactly as serve would
  config show           print the effective configuration, secrets redacted
  status                mode, Keycloak servers and circuits, JWKS: from the running instance's
                        admin listener, else from the database and live health checks
  users add USER [--email E] [--role R]... [--group G]...
                        add a local user; the password is read from standard input
                        (first line), or prompted for twice when it is a terminal
  users passwd USER     set a local user's password (read as for users add)
  users disable USER    refuse the user's logins and end their live sessions
  users enable USER     allow the user's logins again
  users list            users, roles, groups and state (never password hashes)
  users migrate-to-keycloak [--dry-run] [--role R]... [--batch-size N]
                        provision local users into Keycloak through the sync queue (idempotent;
                        users Keycloak already has are linked); --dry-run changes nothing
  sessions list [USER] [--all]
                        live sessions (--all: ended ones too), newest first
  sessions invalidate ID
                        end one session and forget its cached tokens
  sessions logout-user USER
                        end every live session of USER and queue the Keycloak logout
  sessions cleanup [--days N]
                        end expired sessions; purge sessions ended more than N days ago
                        (default ${DEFAULT_CLEANUP_DAYS}), stale cached tokens and old login attempts
  sessions metrics      active sessions by mode, logins in the last hour by mode and result
  sync status           the Keycloak sync queue: counts by status and operation, oldest
                        unfinished item, last error, the unfinished items
  sync now              replay due items once (exit 1 when Keycloak is unreachable)
  sync retry ID | --all-dead
                        put failed or dead items back in the queue
  sync cleanup [--days N]
                        remove done items older than N days (default ${DEFAULT_SYNC_CLEANUP_DAYS})
  sync start            run the replay worker in the foreground (with sync.enabled: false in
                        serve); SIGTERM stops it cleanly
  version               print the version

options:
  -c, --config PATH     configuration file (default: $GATEHOUSE_CONFIG or ${DEFAULT_CONFIG_PATH})
      --json            print JSON instead of text where a command prints a table or report
  -h, --help            this text

exit codes: 0 success, 1 failure, 2 invalid usage or configuration`

/** Options for {@link runCli}. */
export interface CliContext {
  output?: Output
  env?: NodeJS.ProcessEnv
  /** Where `users add|passwd` read the password. Default is `process.stdin`. */
  stdin?: Readable & { isTTY?: boolean }
  /** Where password prompts are written. Default is `process.stderr`. */
  prompts?: Writable
}

/**
 * Runs one command line and resolves to its exit code. `serve` resolves only after a signal
 * has stopped the server.
 */
export async function runCli (argv: string[], context: CliContext = {}): Promise<number> {
  const output = context.output ?? processOutput
  const env = context.env ?? process.env
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        json: { type: 'boolean', default: false },
        email: { type: 'string' },
        role: { type: 'string', multiple: true },
        group: { type: 'string', multiple: true },
        days: { type: 'string' },
        all: { type: 'boolean', default: false },
        'all-dead': { type: 'boolean', default: false },
        'dry-run': { type: 'boolean', default: false },
        'batch-size': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false }
      }
    })
    const [command, sub, ...rest] = positionals
    if (values.help === true || command === undefined || command === 'help') {
      output.out(USAGE)
      return command === undefined && values.help !== true ? 2 : 0
    }
    const configPath = values.config ?? env.GATEHOUSE_CONFIG ?? DEFAULT_CONFIG_PATH
    const json = values.json === true
    switch (command) {
      case 'version':
        output.out(VERSION)
        return 0
      case 'config':
        return runConfigCommand(sub, { configPath, json, env }, output)
      case 'serve':
        return await serve(configPath, env)
      case 'status':
        return await runStatusCommand(loadForServe(configPath, env).config, json, output)
      case 'users':
        return await runUsersCommand(sub, rest, {
          configPath, env, json, email: values.email, roles: values.role, groups: values.group,
          stdin: context.stdin ?? process.stdin, prompts: context.prompts ?? process.stderr,
          dryRun: values['dry-run'] === true, batchSize: values['batch-size'], progressTty: context.output === undefined && process.stderr.isTTY
        }, output)
      case 'sessions':
        return runSessionsCommand(sub, rest, { configPath, env, json, all: values.all, days: values.days }, output)
      case 'sync':
        return await runSyncCommand(sub, rest, { config: loadForServe(configPath, env).config, json, days: values.days, allDead: values['all-dead'] === true }, output)
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}; run gatehouse --help`)
    }
  } catch (err) {
    return reportError(err, output)
  }
}

async function serve (configPath: string, env: NodeJS.ProcessEnv): Promise<number> {
  const { config, policy } = loadForServe(configPath, env)
  const { log, access } = createLoggers({ level: config.log.level })
  const server = await startServer(config, { log, accessLog: access, policy })
  return await new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      log.warn({ signal }, 'shutting down')
      // Lines still queued must reach standard output before the process exits.
      const done = (code: number): void => log.flush(() => resolve(code))
      server.stop().then(() => done(0), (err: unknown) => { log.error({ err }, 'shutdown failed'); done(1) })
    }
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  })
}

function reportError (err: unknown, output: Output): number {
  if (err instanceof ConfigError || err instanceof PolicyError) {
    output.err(`gatehouse: ${err.message}`)
    return 2
  }
  if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
    output.err(`gatehouse: ${(err as Error).message}`)
    return 2
  }
  if (err instanceof GatehouseError) {
    output.err(`gatehouse: ${err.message} (${err.code})`)
    return 1
  }
  output.err(`gatehouse: ${(err as Error).message ?? String(err)}`)
  return 1
}
