import type { Readable } from 'node:stream'
import type { Clock } from '../clock.ts'
import { loadConfig } from '../config/load.ts'
import { UsageError } from '../errors.ts'
import { formatChecks, summarise } from '../doctor/checks.ts'
import { openDoctor } from '../doctor/context.ts'
import { diagnose, type DiagnoseOptions } from '../doctor/diagnose.ts'
import { applyFixes, type FixOptions } from '../doctor/fix.ts'
import { formatTestAuth, testAuth } from '../doctor/test-auth.ts'
import { emit, type Output } from './output.ts'
import { readFirstLine } from './users-command.ts'

/** Options of {@link runDoctorCommand}. */
export interface DoctorCommandOptions {
  configPath: string
  env: NodeJS.ProcessEnv
  json: boolean
  clock: Clock
  /** Where test-auth reads a password (its first line) when it is not a terminal. */
  stdin: Readable & { isTTY?: boolean }
  /** For tests: how the running instance is asked. */
  fetchStatus?: DiagnoseOptions['fetchStatus']
  resetBreakers?: FixOptions['resetBreakers']
}

/**
 * `gatehouse doctor diagnose|fix|test-auth USER`. diagnose exits 1 when a check failed (0 with
 * warnings only); fix exits 0 when every fix ran; test-auth exits 0 when a login would
 * succeed now (or would with the right password), 1 when nothing would let the user in.
 */
export async function runDoctorCommand (sub: string | undefined, args: string[], options: DoctorCommandOptions, output: Output): Promise<number> {
  const { json, clock } = options
  switch (sub) {
    case 'diagnose': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse doctor diagnose [--json]')
      const checks = await diagnose({ configPath: options.configPath, env: options.env, clock, ...(options.fetchStatus !== undefined ? { fetchStatus: options.fetchStatus } : {}) })
      const summary = summarise(checks)
      emit(output, json, { checks, summary }, () => formatChecks(checks))
      return summary.fail > 0 ? 1 : 0
    }
    case 'fix': {
      if (args.length !== 0) throw new UsageError('usage: gatehouse doctor fix [--json]')
      const config = loadConfig({ path: options.configPath, env: options.env })
      const fixes = await applyFixes({ config, clock, ...(options.resetBreakers !== undefined ? { resetBreakers: options.resetBreakers } : {}) })
      emit(output, json, { fixes }, () => fixes.map((f) => `${f.changed ? 'FIXED' : 'OK   '}  ${f.name.padEnd(14)}  ${f.done}`).join('\n'))
      return 0
    }
    case 'test-auth': {
      const [username, ...rest] = args
      if (username === undefined || username === '' || rest.length > 0) throw new UsageError('usage: gatehouse doctor test-auth USER [--json] (a password may be piped on standard input)')
      const config = loadConfig({ path: options.configPath, env: options.env })
      const password = options.stdin.isTTY === true ? null : await readFirstLine(options.stdin)
      const ctx = openDoctor(config, { clock })
      try {
        const report = await testAuth(ctx, username, password === null || password === '' ? null : password)
        emit(output, json, report, () => formatTestAuth(report))
        return report.login_now.verdict === 'no' ? 1 : 0
      } finally {
        ctx.close()
      }
    }
    default:
      throw new UsageError(`unknown doctor subcommand ${JSON.stringify(sub ?? '')}: use diagnose, fix or test-auth`)
  }
}

