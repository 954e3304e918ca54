import { createHash } from 'node:crypto'
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
 *
 * Case (issue 9 item 2). Many apps route case-insensitively (IIS and ASP.NET, Spring with a
 * case-insensitive matcher, anything on a case-insensitive file system), so `/ADMIN` may be
 * served as `/admin`. The rule a request gets is worked out in two parts:
 *
 *   1. Exact spelling, as before: the first rule whose pattern matches the path exactly,
 *      case included (the default when none does). This alone decides every request spelled
 *      as the rules spell it, so no such request is weaker than it was.
 *   2. Other spellings: every rule that restricts (authenticated, roles or deny) and matches
 *      the path only when case is ignored applies as well, whatever its place in the order.
 *      The request must satisfy all of them together with the rule from step 1: a deny among
 *      them denies, and each role rule needs one of its roles.
 *
 * `public` rules take no part in step 2: they exempt only the exact spelling they name, and
 * never a spelling of a path that a restricting rule covers in another case. So ignoring case
 * only ever adds requirements: a decision can get stricter, never weaker, and no order of
 * rules lets a request escape one by changing case. Examples:
 *   - public `/admin/health` before roles [admin] `/admin/**`: `/admin/health` is public (as
 *     before); `/ADMIN/health` and `/admin/HEALTH` need admin.
 *   - public `/Admin/health` before roles [admin] `/admin/**`: `/Admin/health` needs admin
 *     too, being a spelling of `/admin/health`, which the roles rule covers. (Before, it was
 *     public: stricter now.) An exception is spelled as the rule it is carved out of.
 *   - authenticated `/Reports/**` before deny `/reports/secret`: every spelling of
 *     `/reports/secret` is denied, `/Reports/secret` included; `/reports/other` needs a login.
 *   - roles [ops] `/admin/health` before roles [admin] `/admin/**`: `/admin/health` needs ops,
 *     as before; `/ADMIN/HEALTH` needs ops and admin, each rule covering a spelling of it.
 * Folding is the `i` flag's without `u`: ASCII letters fold, and no letter outside ASCII folds
 * onto one inside it (`ſ` is not `s`). Normalised paths carry such letters percent-encoded
 * unless a client sent them raw.
 *
 * Cost: both regular expressions of every pattern are compiled once, at load. When no
 * restricting pattern and not the path has an upper-case letter (the usual request), the
 * two parts give the same answer and only the exact expressions run, as before. Otherwise a
 * request runs the case-insensitive expression first and the exact one only when that
 * matched; nothing is allocated unless step 2 finds a rule.
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
  /** One role from each set: rules combined because a request matched several (see Case above). */
  | { kind: 'role_from_each', sets: ReadonlyArray<readonly string[]> }

/** A compiled rule. */
export interface PolicyRule {
  name: string
  requirement: Requirement
  methods: ReadonlySet<string> | null
  patterns: readonly string[]
  /** One per pattern, case-sensitive: the exact spelling. */
  matchers: readonly RegExp[]
  /** One per pattern, ignoring case; null for `public` rules, which match only their exact spelling. */
  foldedMatchers: readonly RegExp[] | null
}

/** Every rule, in order, and what unmatched routes require. */
export interface PolicySet {
  rules: readonly PolicyRule[]
  fallback: PolicyRule
  /** The directory read, absolute. */
  dir: string
  /**
   * Whether a restricting rule's pattern has an upper-case letter (or a character outside
   * ASCII). When none has and a path has none either, ignoring case changes nothing and
   * {@link matchRule} takes the single exact pass.
   */
  mixedCase: boolean
  /** Files the rules came from, in the order read. */
  files: readonly string[]
  /**
   * The first 12 hex digits of a SHA-256 over every file's name and text, in the order read:
   * the same files give the same version on every replica and restart, so the dashboard and
   * `/status` show whether two sidecars decide by the same rules.
   */
  version: string
  /**
   * Things an operator should know that do not stop start-up, as fixed lower-case sentences
   * (`serve` logs each at warn with `policies.dir`; `config validate` prints them with `dir`). Today only: no rules.
   */
  warnings: readonly string[]
}

let validator: SchemaValidator | undefined

/**
 * Reads every `*.yaml`/`*.yml` in `dir` in name order. Throws one {@link PolicyError} listing
 * every problem of every file. A directory that does not exist is an error naming it: read
 * as no rules, a typo in `policies.dir` would silently drop every deny rule (issue 9 item
 * 18). An existing directory without rules is allowed, with a warning in `warnings`.
 */
export function loadPolicies (dir: string, fallback: 'public' | 'authenticated' | 'deny'): PolicySet {
  const root = resolve(dir)
  let files: string[]
  try {
    files = readdirSync(root).filter((f) => /\.ya?ml$/.test(f)).sort()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new PolicyError(`policy directory ${root} does not exist (policies.dir)`)
    if (code === 'ENOTDIR') throw new PolicyError(`policy directory ${root} is not a directory (policies.dir)`)
    throw new PolicyError(`cannot read policy directory ${root}: ${(err as Error).message}`)
  }
  const problems: ConfigProblem[] = []
  const rules: PolicyRule[] = []
  const hash = createHash('sha256')
  for (const file of files) {
    const text = readFileSync(join(root, file), 'utf8')
    // Length-prefixed, so that moving text from one file's end to the next one's start changes it.
    hash.update(`${file.length}:${file}${Buffer.byteLength(text)}:`).update(text)
    rules.push(...parsePolicyFile(text, file, problems))
  }
  if (problems.length > 0) {
    throw new PolicyError(`invalid policies in ${root}:\n${problems.map((p) => `  ${p.path}: expected ${p.expected}, received ${p.received}`).join('\n')}`, problems)
  }
  const warnings = rules.length > 0
    ? []
    : [`no policy rules${files.length === 0 ? ' (no .yaml or .yml files)' : ''}: every route requires policies.default (${fallback})`]
  const mixedCase = rules.some((r) => r.foldedMatchers !== null && r.patterns.some(mayFold))
  return { rules, fallback: compileRule({ name: `default (${fallback})`, paths: ['/**'], allow: fallback }, 'default', problems), dir: root, files, version: hash.digest('hex').slice(0, 12), mixedCase, warnings }
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
  // Compiled once here, never per request (see Case above).
  const foldedMatchers = requirement.kind === 'public' ? null : rule.paths.map((pattern) => compilePattern(pattern, { ignoreCase: true }))
  const methods = rule.methods === undefined || rule.methods.includes('*') ? null : new Set(rule.methods)
  return { name: rule.name ?? where, requirement, methods, patterns: rule.paths, matchers, foldedMatchers }
}

function patternProblem (pattern: string): string | null {
  if (!pattern.startsWith('/')) return null // the schema says so already
  const segments = pattern.split('/').slice(1)
  if (segments.some((s) => s.includes('**') && s !== '**')) return 'a pattern where ** stands alone as a whole segment'
  try {
    const literal = pattern.replace(/\*+/g, 'x')
    if (matchForm(normalisePath(literal)) !== matchForm(literal)) return 'a normalised path pattern (no //, ., .. or encoded unreserved characters)'
  } catch {
    return 'a normalised path pattern (no ;, no encoded slashes or backslashes, valid escapes)'
  }
  return null
}

/**
 * Compiles a path pattern to a regular expression over {@link matchForm} paths; with
 * `ignoreCase`, one that ignores the case of ASCII letters (the `i` flag without `u`).
 */
export function compilePattern (pattern: string, options: { ignoreCase?: boolean } = {}): RegExp {
  const segments = matchForm(pattern).split('/').slice(1)
  let source = ''
  for (const segment of segments) {
    if (segment === '**') {
      source += '(?:/.*)?'
      continue
    }
    source += '/' + segment.split('*').map(escapeRegExp).join('[^/]*')
  }
  return new RegExp(`^${source === '' ? '/' : source}$`, options.ignoreCase === true ? 'i' : '')
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * The rule deciding a request for `method` and a normalised `path`: the first rule matching
 * the exact spelling (or the fallback), combined with every restricting rule that matches
 * only when case is ignored (see Case above). Without the latter, which is the usual case,
 * the rule itself is returned and nothing is allocated.
 */
export function matchRule (policy: PolicySet, method: string, path: string): PolicyRule {
  const form = matchForm(path)
  const m = method.toUpperCase()
  if (!policy.mixedCase && !mayFold(form)) {
    // Patterns and path all lower-case: the case-insensitive match is the exact one, so the
    // first exact match decides alone. The usual request pays one scan of its path for this.
    for (const rule of policy.rules) {
      if (rule.methods !== null && !rule.methods.has(m) && !(m === 'HEAD' && rule.methods.has('GET'))) continue
      if (anyMatches(rule.matchers, form)) return rule
    }
    return policy.fallback
  }
  let exact: PolicyRule | null = null
  let folded: PolicyRule[] | null = null
  for (const rule of policy.rules) {
    if (rule.methods !== null && !rule.methods.has(m) && !(m === 'HEAD' && rule.methods.has('GET'))) continue
    if (rule.foldedMatchers === null) {
      // public: the exact spelling only, and only while no earlier rule has matched it.
      if (exact === null && anyMatches(rule.matchers, form)) exact = rule
      continue
    }
    // An exact match implies a case-insensitive one, so the cheap miss is one test.
    if (!anyMatches(rule.foldedMatchers, form)) continue
    if (anyMatches(rule.matchers, form)) {
      // First match wins among exact spellings; a later one is shadowed, as before.
      exact ??= rule
      continue
    }
    (folded ??= []).push(rule)
  }
  const decided = exact ?? policy.fallback
  return folded === null ? decided : combine(decided, folded)
}

// Whether ignoring case could change a match on `text`: it has an upper-case ASCII letter, or
// a character outside ASCII (which the `i` flag may fold onto another outside ASCII).
function mayFold (text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if ((c >= 0x41 && c <= 0x5a) || c >= 0x80) return true
  }
  return false
}

function anyMatches (matchers: readonly RegExp[], form: string): boolean {
  for (const re of matchers) if (re.test(form)) return true
  return false
}

// The exact-spelling rule, made to require everything the case-folded rules require too.
function combine (decided: PolicyRule, folded: readonly PolicyRule[]): PolicyRule {
  let requirement = decided.requirement
  for (const rule of folded) requirement = both(requirement, rule.requirement)
  return {
    ...decided,
    name: [decided.name, ...folded.map((r) => `${r.name} (other case)`)].join(' + '),
    requirement
  }
}

/** A requirement satisfied exactly when both `a` and `b` are. */
function both (a: Requirement, b: Requirement): Requirement {
  if (a.kind === 'deny' || b.kind === 'deny') return { kind: 'deny' }
  if (a.kind === 'public' || a.kind === 'authenticated') return b.kind === 'public' ? a : b
  if (b.kind === 'public' || b.kind === 'authenticated') return a
  return { kind: 'role_from_each', sets: [...roleSets(a), ...roleSets(b)] }
}

function roleSets (r: Extract<Requirement, { kind: 'any_role' | 'role_from_each' }>): ReadonlyArray<readonly string[]> {
  return r.kind === 'any_role' ? [r.roles] : r.sets
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
    case 'role_from_each':
      return requirement.sets.every((set) => set.some((r) => roles.includes(r)))
  }
}
