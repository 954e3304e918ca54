import { parseArgs } from 'node:util'
import { ConfigError, GatehouseError, PolicyError, UsageError } from '../errors.ts'
import { DEFAULT_CONFIG_PATH } from '../config/load.ts'
import { createLoggers } from '../log.ts'
import { VERSION } from '../version.ts'
import { loadForServe, runConfigCommand } from './config-command.ts'
import { processOutput, type Output } from './output.ts'
import { startServer } from './serve.ts'
import { runStatusCommand } from './status-command.ts'

const USAGE = `gatehouse ${VERSION}: authentication sidecar for apps behind Keycloak

usage: gatehouse <command> [options]

commands:
  serve                 run the proxy and admin listeners
  config validate       check the configuration and policies exactly as serve would
  config show           print the effective configuration, secrets redacted
  status                mode, Keycloak servers and circuits, JWKS: from the running instance's
                        admin listener, else from the database and live health checks
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
        help: { type: 'boolean', short: 'h', default: false }
      }
    })
    const [command, sub] = positionals
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
