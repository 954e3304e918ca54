import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Type, type Static } from '@sinclair/typebox'
import { parseDocument } from 'yaml'
import { PolicyError, type ConfigProblem } from '../errors.ts'
import { compileValidator, yamlErrorText, type SchemaValidator } from '../config/validate.ts'
import { matchForm, normalisePath } from './normalise-path.ts'

/*
 * Route rules (DESIGN §2 steps 2 and 4). A file holds `rules:`; files are read in name order
 * and their rules concatenated; the first rule whose methods and paths match decides.
 * Path patterns: `*` matches within one segment, `**` (a whole segment) matches any number of
 * segments including none, so `/admin/**` covers `/admin` and everything below it. A
 * trailing slash is never significant to matching.
 */

const RuleSchema = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, description: 'Shown in logs and `policy check`. Default is `<file>#<index>`.' })),
  paths: Type.Array(Type.String({ pattern: '^/', 'x-expected': 'a path pattern starting with /' }), { minItems: 1, description: 'Path patterns; `*` matches within a segment, `**` any number of segments.' }),
  methods: Type.Optional(Type.Array(Type.String({ pattern: '^([A-Z]+|\\*)$', 'x-expected': 'an upper-case HTTP method or *' }), { minItems: 1, description: 'Methods the rule covers; GET covers HEAD too. Default is every method.' })),
  allow: Type.Optional(Type.Union([Type.Literal('public'), Type.Literal('authenticated'), Type.Literal('deny')], { 'x-expected': 'public, authenticated or deny' })),
  roles: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'The caller needs any one of these roles (realm roles as named, client roles as client:role).' }))
}, { additionalProperties: false })

const PolicyFileSchema = Type.Object({
  rules: Type.Array(RuleSchema, { default: [] })
}, { additionalProperties: false })

type RuleSpec = Static<typeof RuleSchema>

/** What a rule requires of a request. */
export type Requirement =
  | { kind: 'public' }
  | { kind: 'authenticated' }
  | { kind: 'deny' }
  | { kind: 'any_role', roles: readonly string[] }

/** A compiled rule. */
export interface PolicyRule {
  name: string
  requirement: Requirement
  methods: ReadonlySet<string> | null
  patterns: readonly string[]
  matchers: readonly RegExp[]
}

/** Every rule, in order, and what unmatched routes require. */
export interface PolicySet {
  rules: readonly PolicyRule[]
  fallback: PolicyRule
  /** Files the rules came from, in the order read. */
  files: readonly string[]
}

let validator: SchemaValidator | undefined

/**
 * Reads every `*.yaml`/`*.yml` in `dir` in name order. Throws one {@link PolicyError} listing
 * every problem of every file. A missing directory is no rules at all (the default decides).
 */
export function loadPolicies (dir: string, fallback: 'public' | 'authenticated' | 'deny'): PolicySet {
  const root = resolve(dir)
  let files: string[]
  try {
    files = readdirSync(root).filter((f) => /\.ya?ml$/.test(f)).sort()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') files = []
    else throw new PolicyError(`cannot read policy directory ${root}: ${(err as Error).message}`)
  }
  const problems: ConfigProblem[] = []
  const rules: PolicyRule[] = []
  for (const file of files) {
    rules.push(...parsePolicyFile(readFileSync(join(root, file), 'utf8'), file, problems))
  }
  if (problems.length > 0) {
    throw new PolicyError(`invalid policies in ${root}:\n${problems.map((p) => `  ${p.path}: expected ${p.expected}, received ${p.received}`).join('\n')}`, problems)
  }
  return { rules, fallback: compileRule({ name: `default (${fallback})`, paths: ['/**'], allow: fallback }, 'default', problems), files }
}

/** Parses one policy file's text; problems are appended with `file: rules[i]…` paths. */
export function parsePolicyFile (text: string, file: string, problems: ConfigProblem[]): PolicyRule[] {
  const doc = parseDocument(text, { uniqueKeys: true })
  if (doc.errors.length > 0) {
    for (const e of doc.errors) problems.push({ path: `${file}${e.linePos?.[0] !== undefined ? ` (line ${e.linePos[0].line})` : ''}`, expected: 'valid YAML', received: yamlErrorText(e) })
    return []
  }
  const data = doc.toJS() as unknown ?? {}
  validator ??= compileValidator(PolicyFileSchema)
  const found = validator(data)
  problems.push(...found.map((p) => ({ ...p, path: `${file}: ${p.path}` })))
  const rules = (data as { rules?: unknown }).rules
  if (!Array.isArray(rules)) return []
  // Rules the schema accepted are still checked, so one bad rule does not hide another.
  const compiled = rules.map((rule: unknown, i) => isCompilable(rule) ? compileRule(rule, `${file}: rules[${i}]`, problems) : null)
  return found.length > 0 ? [] : compiled.filter((r): r is PolicyRule => r !== null)
}

function isCompilable (rule: unknown): rule is RuleSpec {
  const paths = (rule as { paths?: unknown } | null)?.paths
  return Array.isArray(paths) && paths.every((p) => typeof p === 'string')
}


function compileRule (rule: RuleSpec, where: string, problems: ConfigProblem[]): PolicyRule {
  const hasAllow = rule.allow !== undefined
  const hasRoles = rule.roles !== undefined
  if (hasAllow === hasRoles) {
    problems.push({ path: where, expected: 'exactly one of allow (public, authenticated, deny) or roles', received: hasAllow ? 'both' : 'neither' })
  }
  const requirement: Requirement = hasRoles
    ? { kind: 'any_role', roles: rule.roles as string[] }
    : { kind: rule.allow ?? 'deny' }
  const matchers = rule.paths.map((pattern, j) => {
    const problem = patternProblem(pattern)
    if (problem !== null) problems.push({ path: `${where}.paths[${j}]`, expected: problem, received: JSON.stringify(pattern) })
    return compilePattern(pattern)
  })
  const methods = rule.methods === undefined || rule.methods.includes('*') ? null : new Set(rule.methods)
  return { name: rule.name ?? where, requirement, methods, patterns: rule.paths, matchers }
}

function patternProblem (pattern: string): string | null {
  if (!pattern.startsWith('/')) return null // the schema says so already
  const segments = pattern.split('/').slice(1)
  if (segments.some((s) => s.includes('**') && s !== '**')) return 'a pattern where ** stands alone as a whole segment'
  try {
    const literal = pattern.replace(/\*+/g, 'x')
    if (matchForm(normalisePath(literal)) !== matchForm(literal)) return 'a normalised path pattern (no //, ., .. or encoded unreserved characters)'
  } catch {
    return 'a normalised path pattern (no encoded slashes or backslashes, valid escapes)'
  }
  return null
}

/** Compiles a path pattern to a regular expression over {@link matchForm} paths. */
export function compilePattern (pattern: string): RegExp {
  const segments = matchForm(pattern).split('/').slice(1)
  let source = ''
  for (const segment of segments) {
    if (segment === '**') {
      source += '(?:/.*)?'
      continue
    }
    source += '/' + segment.split('*').map(escapeRegExp).join('[^/]*')
  }
  return new RegExp(`^${source === '' ? '/' : source}$`)
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** The first rule matching `method` and a normalised `path`, or the fallback. */
export function matchRule (policy: PolicySet, method: string, path: string): PolicyRule {
  const form = matchForm(path)
  const m = method.toUpperCase()
  for (const rule of policy.rules) {
    if (rule.methods !== null && !rule.methods.has(m) && !(m === 'HEAD' && rule.methods.has('GET'))) continue
    if (rule.matchers.some((re) => re.test(form))) return rule
  }
  return policy.fallback
}

/** Whether `roles` satisfy `requirement` (authentication is already established). */
export function satisfies (requirement: Requirement, roles: readonly string[]): boolean {
  switch (requirement.kind) {
    case 'public':
    case 'authenticated':
      return true
    case 'deny':
      return false
    case 'any_role':
      return requirement.roles.some((r) => roles.includes(r))
  }
}
