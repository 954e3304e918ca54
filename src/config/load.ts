import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parseDocument, parse as parseYaml } from 'yaml'
import { ConfigError, type ConfigProblem } from '../errors.ts'
import { ConfigSchema, ENVIRONMENT_NAMES, type Config, type EnvironmentName } from './schema.ts'
import { precompiled } from './precompiled.ts'
import { compileValidator, yamlErrorText, crossFieldProblems, providerKindOf, realmOfIssuer, type SchemaValidator } from './validate.ts'

/** Default path of the configuration file when neither `-c` nor `GATEHOUSE_CONFIG` names one. */
export const DEFAULT_CONFIG_PATH = './config.yaml'

/** Where {@link loadConfig} reads from. */
export interface LoadOptions {
  /** Path of the YAML file. */
  path: string
  /** Environment variables for `${VAR}` and `GATEHOUSE_ENV`. Default is `process.env`. */
  env?: NodeJS.ProcessEnv
}

let validator: SchemaValidator | undefined

function schemaValidator (): SchemaValidator {
  validator ??= compileValidator(ConfigSchema, precompiled.config)
  return validator
}

/**
 * Reads, substitutes, overlays, validates and freezes a configuration file. Throws one
 * {@link ConfigError} listing every problem found; nothing is started by this function.
 * The only reader of `process.env` in Gatehouse (HOUSE-STYLE §3).
 */
export function loadConfig (options: LoadOptions): Config {
  const env = options.env ?? process.env
  const path = resolve(options.path)
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'the file does not exist' : (err as Error).message
    throw new ConfigError('ERR_CONFIG_READ', `cannot read configuration ${path}: ${reason}`, [
      { path: '(file)', expected: `a readable YAML file at ${path}`, received: reason }
    ], { cause: err })
  }
  return parseConfig(text, { path, env })
}

/** As {@link loadConfig}, from text already read (`path` only names the file and its directory). */
export function parseConfig (text: string, options: { path: string, env?: NodeJS.ProcessEnv }): Config {
  const env = options.env ?? process.env
  const raw = parseYamlRoot(text, options.path)
  const problems: ConfigProblem[] = []
  const substituted = substituteEnv(raw, '', env, problems, ConfigSchema) as Record<string, unknown>

  const environment = selectEnvironment(env, substituted, problems)
  const overlays = (substituted.environments ?? {}) as Record<string, unknown>
  const base = { ...substituted }
  delete base.environments

  let effective: Record<string, unknown> = base
  if (environment !== null && isMapping(overlays[environment])) {
    effective = deepMerge(base, overlays[environment] as Record<string, unknown>)
  }
  const validate = schemaValidator()
  const data: Record<string, unknown> = structuredClone({ ...effective, environments: substituted.environments })
  const unset = new Set(problems.map((p) => p.path))
  problems.push(...attribute(validate(data).filter((p) => !unset.has(p.path)), environment, overlays))
  if (problems.length === 0) problems.push(...attribute(crossFieldProblems(data, effective), environment, overlays))

  // Overlays not selected now are checked too, so a typo in staging fails in every environment.
  for (const name of ENVIRONMENT_NAMES) {
    if (name === environment || !isMapping(overlays[name])) continue
    const merged = structuredClone(deepMerge(base, overlays[name] as Record<string, unknown>))
    const explicit = structuredClone(deepMerge(base, overlays[name] as Record<string, unknown>))
    const found = [...validate(merged), ...crossFieldProblems(merged, explicit)]
    for (const problem of found) {
      if (pathExists(overlays[name], problem.path)) problems.push({ ...problem, path: `environments.${name}.${problem.path}` })
    }
  }

  if (problems.length > 0) {
    throw new ConfigError('ERR_CONFIG_INVALID', `invalid configuration ${options.path}:\n${formatProblems(problems)}`, problems)
  }
  const keycloak = data.keycloak as Record<string, unknown>
  keycloak.kind = providerKindOf(String(keycloak.issuer), keycloak.provider as string | undefined)
  if (keycloak.kind === 'keycloak') {
    keycloak.realm ??= realmOfIssuer(String(keycloak.issuer))
  } else {
    keycloak.realm = ''
    // A generic provider's back channel is the issuer itself unless told otherwise.
    if (keycloak.server === undefined && (keycloak.ha as { enabled?: boolean } | undefined)?.enabled !== true) keycloak.server = String(keycloak.issuer)
  }
  const config = { ...data, environment, base_dir: dirname(resolve(options.path)) }
  return deepFreeze(config) as unknown as Config
}

/** One line per problem: `path: expected X, received Y`. */
export function formatProblems (problems: readonly ConfigProblem[]): string {
  return problems.map((p) => `  ${p.path}: expected ${p.expected}, received ${p.received}`).join('\n')
}

function parseYamlRoot (text: string, path: string): Record<string, unknown> {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({
      path: e.linePos?.[0] !== undefined ? `(line ${e.linePos[0].line}, column ${e.linePos[0].col})` : '(file)',
      expected: 'valid YAML',
      received: yamlErrorText(e)
    }))
    throw new ConfigError('ERR_CONFIG_INVALID', `invalid configuration ${path}:\n${formatProblems(problems)}`, problems)
  }
  const value: unknown = doc.toJS()
  if (!isMapping(value)) {
    const problems = [{ path: '(top level)', expected: 'a mapping of sections', received: value === null ? 'an empty file' : typeof value }]
    throw new ConfigError('ERR_CONFIG_INVALID', `invalid configuration ${path}:\n${formatProblems(problems)}`, problems)
  }
  return value
}

const REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

/**
 * Replaces `${VAR}` and `${VAR:-default}` in string values of the parsed document (never in
 * raw text, so a variable's value cannot add keys). A value that is exactly one reference
 * is re-read as a YAML scalar so ports and booleans keep their type, unless the schema wants
 * a string there (a numeric-looking secret stays a string). `$$` writes a `$`.
 */
function substituteEnv (node: unknown, path: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[], schema: unknown): unknown {
  if (Array.isArray(node)) return node.map((item, i) => substituteEnv(item, `${path}[${i}]`, env, problems, schemaChild(schema, path, null)))
  if (isMapping(node)) {
    const out: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(node)) {
      out[key] = substituteEnv(value, path === '' ? key : `${path}.${key}`, env, problems, schemaChild(schema, path, key))
    }
    return out
  }
  if (typeof node !== 'string' || !node.includes('$')) return node
  const whole = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$/.test(node)
  const result = node.replace(REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
    if (match === '$$') return '$'
    const value = env[name as string]
    if (value !== undefined && value !== '') return value
    if (fallback !== undefined) return fallback
    problems.push({ path, expected: `environment variable ${name} to be set (referenced as \${${name}})`, received: value === '' ? 'an empty variable' : 'an unset variable' })
    return ''
  })
  if (!whole || wantsString(schema)) return result
  try {
    const scalar: unknown = parseYaml(result)
    return scalar === null || ['string', 'number', 'boolean'].includes(typeof scalar) ? (scalar ?? '') : result
  } catch {
    return result
  }
}

/** The schema node for `key` under `schema` (`key` null: a list item); overlays restart at the root. */
function schemaChild (schema: unknown, path: string, key: string | null): unknown {
  if (/^environments\.[^.]+$/.test(path)) return ConfigSchema
  if (!isMapping(schema)) return undefined
  if (key === null) return schema.items
  const properties = schema.properties as Record<string, unknown> | undefined
  return properties?.[key]
}

function wantsString (schema: unknown): boolean {
  if (!isMapping(schema)) return false
  if (schema.type === 'string') return true
  return Array.isArray(schema.anyOf) && schema.anyOf.some(wantsString) && !schema.anyOf.some((s) => isMapping(s) && s.type !== 'string' && s.const === undefined)
}

function selectEnvironment (env: NodeJS.ProcessEnv, doc: Record<string, unknown>, problems: ConfigProblem[]): EnvironmentName | null {
  const name = env.GATEHOUSE_ENV
  if (name === undefined || name === '') return null
  if (!(ENVIRONMENT_NAMES as readonly string[]).includes(name)) {
    problems.push({ path: 'GATEHOUSE_ENV', expected: `one of ${ENVIRONMENT_NAMES.join(', ')}`, received: JSON.stringify(name) })
    return null
  }
  if (doc.environments !== undefined && !isMapping(doc.environments)) return null
  return name as EnvironmentName
}

/** Problems found in the effective config are reported where the value came from. */
function attribute (problems: ConfigProblem[], environment: EnvironmentName | null, overlays: Record<string, unknown>): ConfigProblem[] {
  if (environment === null) return problems
  const overlay = overlays[environment]
  return problems.map((p) => pathExists(overlay, p.path) ? { ...p, path: `environments.${environment}.${p.path}` } : p)
}

function pathExists (root: unknown, path: string): boolean {
  let node = root
  for (const part of path.split(/\.|\[(\d+)\]/).filter((p) => p !== undefined && p !== '')) {
    if (node === null || typeof node !== 'object') return false
    if (!Object.hasOwn(node, part)) return false
    node = (node as Record<string, unknown>)[part]
  }
  return node !== root
}

function isMapping (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** Objects merge key by key; lists and scalars in the overlay replace the base's. */
export function deepMerge (base: Record<string, unknown>, overlay: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(overlay)) {
    const current = out[key]
    out[key] = isMapping(current) && isMapping(value) ? deepMerge(current, value) : structuredClone(value)
  }
  return out
}

function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}
