import { resolve } from 'node:path'
import { stringify } from 'yaml'
import { loadConfig } from '../config/load.ts'
import { redactConfig } from '../config/redact.ts'
import type { Config } from '../config/schema.ts'
import { loadPolicies, type PolicySet } from '../authz/policy.ts'
import { UsageError } from '../errors.ts'
import { databaseFile, locationProblem } from '../store/db.ts'
import { emit, type Output } from './output.ts'

/** Options every config subcommand takes. */
export interface ConfigCommandOptions {
  configPath: string
  json: boolean
  env?: NodeJS.ProcessEnv
}

/**
 * Loads the configuration and the policies exactly as `serve` does, so a file that passes
 * `config validate` is a file `serve` accepts.
 */
export function loadForServe (configPath: string, env?: NodeJS.ProcessEnv): { config: Config, policy: PolicySet } {
  const config = loadConfig({ path: configPath, ...(env !== undefined ? { env } : {}) })
  const policy = loadPolicies(resolve(config.base_dir, config.policies.dir), config.policies.default)
  return { config, policy }
}

/** `gatehouse config validate|show`. */
export function runConfigCommand (sub: string | undefined, options: ConfigCommandOptions, output: Output): number {
  switch (sub) {
    case 'validate': {
      const { config, policy } = loadForServe(options.configPath, options.env)
      const warnings = [...configWarnings(config), ...policy.warnings.map((w) => `${policy.dir}: ${w}`)]
      for (const warning of warnings) output.err(`gatehouse: warning: ${warning}`)
      emit(output, options.json, { valid: true, path: resolve(options.configPath), environment: config.environment, policy_files: policy.files, rules: policy.rules.length, warnings },
        () => `configuration is valid: ${resolve(options.configPath)} (environment: ${config.environment ?? 'none'}; ${policy.rules.length} policy rule${policy.rules.length === 1 ? '' : 's'} from ${policy.files.length} file${policy.files.length === 1 ? '' : 's'})`)
      return 0
    }
    case 'show': {
      const { config } = loadForServe(options.configPath, options.env)
      const { base_dir: _base, ...shown } = redactConfig(config) as Record<string, unknown>
      emit(output, options.json, shown, () => stringify(shown).trimEnd())
      return 0
    }
    default:
      throw new UsageError(`unknown config subcommand ${JSON.stringify(sub ?? '')}: use validate or show`)
  }
}

/**
 * What a valid file may still trip over when serve starts, on this machine: the database
 * location (a directory that cannot be created, a read-only mount). Warnings, not errors: the
 * file may be validated on another machine than the one that runs it.
 */
export function configWarnings (config: Config): string[] {
  const warnings: string[] = []
  if (config.database.path !== ':memory:') {
    const problem = locationProblem(databaseFile(config))
    if (problem !== null) warnings.push(`database.path: ${problem}; serve would fail to start (ERR_DB_OPEN)`)
  }
  return warnings
}
