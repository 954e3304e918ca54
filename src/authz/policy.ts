import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Type, type Static } from '@sinclair/typebox'
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml'
import { PolicyError, type ConfigProblem } from '../errors.ts'
import { precompiled } from '../config/precompiled.ts'
import { compilePointedValidator, yamlErrorText, type PointedValidator } from '../config/validate.ts'
import { matchForm, normalisePath } from './normalise-path.ts'
import { isParamSegment, normaliseHost, RouteTrie, type HostMatcher } from './route-trie.ts'
import { compileRoleModel, type RoleDefinition, type RoleMappings, type RoleModel } from './roles.ts'

/*
 * Policies (DESIGN §2 steps 2 and 4; policies/README.md is the reference for people). Every
 * `*.yaml`/`*.yml` file of `policies.dir` is read in name order and merged: `rules` are
 * concatenated in that order, `roles`, `group_roles`, `client_roles` and `realm_roles` are
 * united (a name defined twice is an error naming both places).
 *
 * Precedence: first match wins. The first rule, in file order, whose methods, hosts and path
 * patterns match decides; routes no rule matches require `policies.default`. This is what the
 * first-cut policies did, so every file written for them means what it meant. (Most specific
 * match was the alternative; it was not chosen because "specific" needs a ranking of patterns
 * that people get wrong — is `/api/*` more specific than `/**` with a method? — and because it
 * would silently reorder existing files.) The matcher (route-trie.ts) gives exactly the answer
 * of trying rules in order, at a cost that does not grow with their number.
 *
 * Path patterns: literal segments, `:name` (one whole segment), `*` (within one segment, or a
 * whole one), `**` (a whole segment: any number of segments, none included, so `/admin/**`
 * covers `/admin`). A trailing slash is never significant.
 *
 * Case (issue 9 item 2). Many apps route case-insensitively (IIS and ASP.NET, Spring with a
 * case-insensitive matcher, anything on a case-insensitive file system), so `/ADMIN` may be
 * served as `/admin`. The rule a request gets is worked out in two parts:
 *
 *   1. Exact spelling, as before: the first rule whose pattern matches the path exactly,
 *      case included (the default when none does). This alone decides every request spelled
 *      as the rules spell it, so no such request is weaker than it was.
 *   2. Other spellings: every rule that restricts (anything but public) and matches the path
 *      only when case is ignored applies as well, whatever its place in the order. The request
 *      must satisfy all of them together with the rule from step 1: a deny among them denies,
 *      and each one's requirements must all be met.
 *
 * `public` rules take no part in step 2: they exempt only the exact spelling they name, and
 * never a spelling of a path that a restricting rule covers in another case. So ignoring case
 * only ever adds requirements: a decision can get stricter, never weaker, and no order of
 * rules lets a request escape one by changing case. Examples:
 *   - public `/admin/health` before any_roles [admin] `/admin/**`: `/admin/health` is public
 *     (as before); `/ADMIN/health` and `/admin/HEALTH` need admin.
 *   - public `/Admin/health` before any_roles [admin] `/admin/**`: `/Admin/health` needs admin
 *     too, being a spelling of `/admin/health`, which the roles rule covers. An exception is
 *     spelled as the rule it is carved out of.
 *   - authenticated `/Reports/**` before deny `/reports/secret`: every spelling of
 *     `/reports/secret` is denied, `/Reports/secret` included; `/reports/other` needs a login.
 *   - any_roles [ops] `/admin/health` before any_roles [admin] `/admin/**`: `/admin/health`
 *     needs ops, as before; `/ADMIN/HEALTH` needs ops and admin, each rule covering a spelling.
 * Folding is the `i` flag's without `u`: ASCII letters fold, and no letter outside ASCII folds
 * onto one inside it (`ſ` is not `s`). Normalised paths carry such letters percent-encoded
 * unless a client sent them raw.
 *
 * Cost: two tries are built at load, one of every rule as spelled and one of the restricting
 * rules with case folded. When no restricting pattern and not the path has an upper-case
 * letter (the usual request), both parts give the same answer and only the exact trie is
 * walked, for the first match; nothing is allocated beyond the path's segments.
 */

/** A name of a role, permission or group: no commas (headers list them comma-separated), no control characters. */
const NAME = '^[^,\\u0000-\\u001f\\u007f]+$'
const Name = Type.String({ pattern: NAME, 'x-expected': 'a non-empty name without commas or control characters' })
const Names = (description: string) => Type.Array(Name, { minItems: 1, description })
const Pattern = Type.String({ pattern: '^/', 'x-expected': 'a path pattern starting with /' })

const RuleSchema = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, description: 'Shown in logs and `policy check`. Default is `<file>: rules[<index>]`.' })),
  path: Type.Optional(Pattern),
  paths: Type.Optional(Type.Array(Pattern, { minItems: 1, description: 'Path patterns: literal segments, `:name` (one segment), `*` (within a segment), `**` (any number of segments).' })),
  methods: Type.Optional(Type.Array(Type.String({ pattern: '^([A-Z]+|\\*)$', 'x-expected': 'an upper-case HTTP method or *' }), { minItems: 1, description: 'Methods the rule covers; GET covers HEAD too. Default is every method.' })),
  hosts: Type.Optional(Type.Array(Type.String({ pattern: '^((\\*\\.)?[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*|\\[[0-9A-Fa-f:.]+\\])$', 'x-expected': 'a host name (no port), *.domain, or a bracketed IPv6 address' }), { minItems: 1, description: 'Host names the rule covers. Default is every host.' })),
  allow: Type.Optional(Type.Union([Type.Literal('public'), Type.Literal('authenticated'), Type.Literal('deny')], { 'x-expected': 'public, authenticated or deny' })),
  roles: Type.Optional(Names('The caller needs any one of these roles (as any_roles).')),
  any_roles: Type.Optional(Names('The caller needs any one of these roles.')),
  all_roles: Type.Optional(Names('The caller needs every one of these roles.')),
  permissions: Type.Optional(Names('The caller needs every one of these permissions.')),
  groups: Type.Optional(Names('The caller must be in any one of these groups (as the token spells them).')),
  emails: Type.Optional(Type.Array(Type.String({ pattern: '^[^@\\s,]+@[^@\\s,]+$', 'x-expected': 'an e-mail address' }), { minItems: 1, description: 'The caller\'s verified e-mail address is one of these, or in email_domains.' })),
  email_domains: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+$', 'x-expected': 'a domain name (no @, no wildcard)' }), { minItems: 1, description: 'The caller\'s verified e-mail address is in one of these domains, or in emails.' }))
}, { additionalProperties: false })

const RoleSchema = Type.Object({
  description: Type.Optional(Type.String()),
  permissions: Type.Optional(Type.Array(Name)),
  inherits: Type.Optional(Type.Array(Name))
}, { additionalProperties: false })

/**
 * The schema of one policy file (`rules`, `roles`, `group_roles`, `client_roles`,
 * `realm_roles`), checked before the cross-file checks (cycles, names defined twice).
 */
export const PolicyFileSchema = Type.Object({
  rules: Type.Optional(Type.Array(RuleSchema)),
  roles: Type.Optional(Type.Record(Type.String(), RoleSchema)),
  group_roles: Type.Optional(Type.Record(Type.String(), Type.Array(Name))),
  client_roles: Type.Optional(Type.Record(Type.String(), Type.Array(Name))),
  realm_roles: Type.Optional(Type.Record(Type.String(), Type.Array(Name)))
}, { additionalProperties: false })

type RuleSpec = Static<typeof RuleSchema>
type FileSpec = Static<typeof PolicyFileSchema>

/** The requirements keys of a rule, in the order they are checked. */
export const REQUIREMENT_KEYS = ['roles', 'any_roles', 'all_roles', 'permissions', 'groups', 'emails', 'email_domains'] as const

/** One thing a caller must have. A rule's conditions must all hold. */
export type Clause =
  | { kind: 'any_role', roles: readonly string[] }
  | { kind: 'all_roles', roles: readonly string[] }
  | { kind: 'permissions', permissions: readonly string[] }
  | { kind: 'any_group', groups: readonly string[] }
  /** A verified e-mail address that is one of `emails` or in one of `domains` (oauth2-proxy's `--authenticated-emails-file` or `--email-domain`). */
  | { kind: 'email', emails: readonly string[], domains: readonly string[] }

/** What a rule requires of a request. */
export type Requirement =
  | { kind: 'public' }
  | { kind: 'authenticated' }
  | { kind: 'deny' }
  /** Authenticated, and every clause holds (rules combined by case folding join their clauses). */
  | { kind: 'conditions', clauses: readonly Clause[] }

/** A compiled rule. */
export interface PolicyRule {
  name: string
  /** Place in file order (the default rule: -1). */
  index: number
  requirement: Requirement
  methods: ReadonlySet<string> | null
  hosts: HostMatcher | null
  patterns: readonly string[]
  /** `file (line n)`, or `policies.default`. */
  source: string
  /**
   * Why an authenticated caller who meets the requirement is let through (worked out here, not
   * per request): authenticated, role_granted (only role conditions), requirements_met.
   */
  granted: 'authenticated' | 'role_granted' | 'requirements_met'
}

/** Every rule, in order, with the role model and what unmatched routes require. */
export interface PolicySet {
  rules: readonly PolicyRule[]
  fallback: PolicyRule
  roles: RoleModel
  /** The directory read, absolute. */
  dir: string
  /** Files the rules came from, in the order read. */
  files: readonly string[]
  /** `sha256:` and the first 16 hex digits of a hash of every file's name and content: what `/status` reports. */
  version: string
  /**
   * Whether a restricting rule's pattern has an upper-case letter (or a character outside
   * ASCII). When none has and a path has none either, ignoring case changes nothing and
   * {@link matchRule} walks only the exact trie.
   */
  mixedCase: boolean
  /** Whether any rule names hosts: only then is a request's host read. */
  hasHosts: boolean
  exact: RouteTrie
  folded: RouteTrie
  /**
   * Things an operator should know that do not stop start-up, as sentences (`serve` logs each
   * at warn with `policies.dir`; `config validate` and `policy validate` print them): no rules,
   * a permission no role grants.
   */
  warnings: readonly string[]
}

let validator: PointedValidator | undefined

/**
 * Reads every `*.yaml`/`*.yml` in `dir` in name order. Throws one {@link PolicyError} listing
 * every problem of every file, each with its file and line. A directory that does not exist
 * is an error naming it: read as no rules, a typo in `policies.dir` would silently drop every
 * deny rule (issue 9 item 18). An existing directory without rules is allowed, with a warning.
 * A listed file that cannot be read (gone by the time it is read, a dangling symlink) is an
 * error too: never a set loaded without it.
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
  const texts: Array<{ file: string, text: string }> = []
  for (const file of files) {
    try {
      texts.push({ file, text: readFileSync(join(root, file), 'utf8') })
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // A directory named like a policy file holds no rules.
      if (code === 'EISDIR') continue
      // Listed but gone when read: being saved (an editor that moves the old file aside
      // before writing the new one), deleted, or a dangling symlink. Loading the rest would
      // put in force a set without that file's rules, deny rules included, so the whole set
      // is refused: at a reload the running set stays, and the save or deletion is itself a
      // change the watch reloads after.
      if (code === 'ENOENT') throw new PolicyError(`policy file ${join(root, file)} disappeared while being read (saved, deleted, or a dangling symlink); the set is not loaded without it`)
      throw new PolicyError(`cannot read policy file ${join(root, file)}: ${(err as Error).message}`)
    }
  }
  return compilePolicies(texts, root, fallback)
}

/**
 * Compiles the texts of policy files (name and content, in the order they merge). Throws one
 * {@link PolicyError} listing every problem. {@link loadPolicies} reads them from a directory.
 */
export function compilePolicies (texts: ReadonlyArray<{ file: string, text: string }>, dir: string, fallback: 'public' | 'authenticated' | 'deny'): PolicySet {
  const problems: ConfigProblem[] = []
  const specs: Array<{ rule: RuleSpec, where: string, source: string }> = []
  const roles = new Map<string, RoleDefinition>()
  const mappings: RoleMappings = { groupRoles: new Map(), tokenRoles: new Map() }
  const hash = createHash('sha256')
  let complete = true
  for (const { file, text } of texts) {
    hash.update(`${file}\u0000${text}\u0000`)
    const parsed = parsePolicyFile(text, file, problems)
    if (parsed === null) {
      complete = false
      continue
    }
    const { spec, at } = parsed
    for (const [i, rule] of (spec.rules ?? []).entries()) {
      const line = at(['rules', i])
      specs.push({ rule, where: `${file}${line}: ${keyPath(['rules', i])}`, source: `${file}${line}` })
    }
    for (const [name, role] of Object.entries(spec.roles ?? {})) {
      const where = `${file}${at(['roles', name])}: ${keyPath(['roles', name])}`
      const known = roles.get(name)
      if (known !== undefined) {
        problems.push({ path: where, expected: 'a role defined once across all policy files', received: `also defined at ${known.where}` })
        continue
      }
      roles.set(name, { name, permissions: role.permissions ?? [], inherits: role.inherits ?? [], where })
    }
    const mapInto = (section: 'group_roles' | 'client_roles' | 'realm_roles', into: Map<string, { roles: readonly string[], where: string }>): void => {
      for (const [key, targets] of Object.entries(spec[section] ?? {})) {
        const where = `${file}${at([section, key])}: ${keyPath([section, key])}`
        const problem = mappingKeyProblem(section, key)
        if (problem !== null) {
          problems.push({ path: where, expected: problem, received: JSON.stringify(key) })
          continue
        }
        const known = into.get(key)
        if (known !== undefined) {
          problems.push({ path: where, expected: `${JSON.stringify(key)} mapped once across all policy files`, received: `also mapped at ${known.where}` })
          continue
        }
        into.set(key, { roles: targets, where })
      }
    }
    mapInto('group_roles', mappings.groupRoles)
    mapInto('client_roles', mappings.tokenRoles)
    mapInto('realm_roles', mappings.tokenRoles)
  }
  const model = compileRoleModel(roles, mappings, problems, { complete })
  const rules = specs.map(({ rule, where, source }, index) => compileRule(rule, index, where, source, problems))
  if (problems.length > 0) {
    throw new PolicyError(`invalid policies in ${dir}:\n${problems.map((p) => `  ${p.path}: expected ${p.expected}, received ${p.received}`).join('\n')}`, problems)
  }
  const warnings: string[] = rules.length > 0
    ? []
    : [`no policy rules${texts.length === 0 ? ' (no .yaml or .yml files)' : ''}: every route requires policies.default (${fallback})`]
  const granted = new Set([...model.closures.values()].flatMap((c) => c.permissions))
  for (const rule of rules) {
    if (rule.requirement.kind !== 'conditions') continue
    for (const clause of rule.requirement.clauses) {
      if (clause.kind !== 'permissions') continue
      for (const p of clause.permissions) if (!granted.has(p)) warnings.push(`${rule.name}: no role grants permission ${p}, so this rule allows nobody`)
    }
  }
  const exact = new RouteTrie()
  const folded = new RouteTrie({ ignoreCase: true })
  for (const rule of rules) {
    for (const pattern of rule.patterns) {
      const segments = matchForm(pattern).split('/').slice(1)
      const entry = { index: rule.index, methods: rule.methods, hosts: rule.hosts }
      exact.add(segments, entry)
      // Compiled once here, never per request (see Case above).
      if (rule.requirement.kind !== 'public') folded.add(segments, entry)
    }
  }
  return {
    rules,
    fallback: { name: `default (${fallback})`, index: -1, requirement: { kind: fallback }, methods: null, hosts: null, patterns: ['/**'], source: 'policies.default', granted: 'authenticated' },
    roles: model,
    dir,
    files: texts.map((t) => t.file),
    version: `sha256:${hash.digest('hex').slice(0, 16)}`,
    mixedCase: rules.some((r) => r.requirement.kind !== 'public' && r.patterns.some(mayFold)),
    hasHosts: rules.some((r) => r.hosts !== null),
    exact,
    folded,
    warnings
  }
}

/**
 * Parses and schema-checks one policy file's text; problems are appended as
 * `file (line n): key.path`. Returns the file's content and a function giving the ` (line n)`
 * of a key path, or null when the file has problems of its own.
 */
function parsePolicyFile (text: string, file: string, problems: ConfigProblem[]): { spec: FileSpec, at: (parts: ReadonlyArray<string | number>) => string } | null {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { uniqueKeys: true, lineCounter })
  if (doc.errors.length > 0) {
    for (const e of doc.errors) problems.push({ path: `${file}${e.linePos?.[0] !== undefined ? ` (line ${e.linePos[0].line})` : ''}`, expected: 'valid YAML', received: yamlErrorText(e) })
    return null
  }
  const at = (parts: ReadonlyArray<string | number>): string => {
    const line = lineOf(doc, lineCounter, parts)
    return line === null ? '' : ` (line ${line})`
  }
  const data = doc.toJS() as unknown ?? {}
  validator ??= compilePointedValidator(PolicyFileSchema, precompiled.policy)
  const found = validator(data)
  for (const { problem, pointer } of found) {
    const parts = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    problems.push({ ...problem, path: `${file}${at(parts)}: ${keyPath(parts)}` })
  }
  if (found.length > 0) {
    // Rules the schema accepted are still checked, so one bad rule does not hide another.
    const rules = (data as { rules?: unknown }).rules
    if (Array.isArray(rules)) {
      for (const [i, rule] of rules.entries()) {
        if (isCompilable(rule)) compileRule(rule, i, `${file}${at(['rules', i])}: ${keyPath(['rules', i])}`, file, problems)
      }
    }
    return null
  }
  return { spec: data as FileSpec, at }
}

// The line of the value at a key path: for a mapping's key, the key's own line. Falls back to
// the nearest ancestor that exists (a missing key is reported on its parent's line).
function lineOf (doc: Document, counter: LineCounter, parts: ReadonlyArray<string | number>): number | null {
  let node: unknown = doc.contents
  let offset: number | undefined = (doc.contents as { range?: [number, number, number] } | null)?.range?.[0]
  for (const part of parts) {
    if (isMap(node)) {
      const pair = node.items.find((p) => String(isScalar(p.key) ? p.key.value : p.key) === String(part))
      if (pair === undefined) break
      offset = (pair.key as { range?: [number, number, number] } | null)?.range?.[0] ?? offset
      node = pair.value
    } else if (isSeq(node)) {
      const item = node.items[Number(part)] as { range?: [number, number, number] } | undefined
      if (item === undefined) break
      offset = item.range?.[0] ?? offset
      node = item
    } else {
      break
    }
  }
  return offset === undefined ? null : counter.linePos(offset).line
}

/** A key path as people read it: `rules[0].paths[1]`, `group_roles["/platform/admins"]`. */
function keyPath (parts: ReadonlyArray<string | number>): string {
  let out = ''
  for (const part of parts) {
    if (typeof part === 'number' || /^\d+$/.test(part)) out += `[${part}]`
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(part)) out += out === '' ? part : `.${part}`
    else out += `[${JSON.stringify(part)}]`
  }
  return out === '' ? '(top level)' : out
}

function mappingKeyProblem (section: 'group_roles' | 'client_roles' | 'realm_roles', key: string): string | null {
  if (key === '' || !new RegExp(NAME).test(key)) return 'a name without commas or control characters'
  if (section === 'client_roles' && !/^[^:]+:.+$/.test(key)) return 'a client role as client:role'
  return null
}

function isCompilable (rule: unknown): rule is RuleSpec {
  if (rule === null || typeof rule !== 'object') return false
  const { path, paths } = rule as { path?: unknown, paths?: unknown }
  return (path === undefined || typeof path === 'string') && (paths === undefined || (Array.isArray(paths) && paths.every((p) => typeof p === 'string')))
}

function compileRule (rule: RuleSpec, index: number, where: string, source: string, problems: ConfigProblem[]): PolicyRule {
  const present = REQUIREMENT_KEYS.filter((k) => rule[k] !== undefined)
  const hasAllow = rule.allow !== undefined
  if (hasAllow === (present.length > 0)) {
    problems.push({ path: where, expected: `exactly one of allow (public, authenticated, deny) or requirements (${REQUIREMENT_KEYS.join(', ')})`, received: hasAllow ? `both (allow and ${present.join(', ')})` : 'neither' })
  }
  if (rule.roles !== undefined && rule.any_roles !== undefined) {
    problems.push({ path: where, expected: 'one of roles or any_roles (they mean the same)', received: 'both' })
  }
  if ((rule.path === undefined) === (rule.paths === undefined)) {
    problems.push({ path: where, expected: 'exactly one of path or paths', received: rule.path === undefined ? 'neither' : 'both' })
  }
  const patterns = rule.paths ?? (rule.path !== undefined ? [rule.path] : [])
  for (const [j, pattern] of patterns.entries()) {
    const problem = patternProblem(pattern)
    if (problem !== null) problems.push({ path: rule.paths !== undefined ? `${where}.paths[${j}]` : `${where}.path`, expected: problem, received: JSON.stringify(pattern) })
  }
  const clauses: Clause[] = []
  const anyRoles = rule.any_roles ?? rule.roles
  if (anyRoles !== undefined) clauses.push({ kind: 'any_role', roles: anyRoles })
  if (rule.all_roles !== undefined) clauses.push({ kind: 'all_roles', roles: rule.all_roles })
  if (rule.permissions !== undefined) clauses.push({ kind: 'permissions', permissions: rule.permissions })
  if (rule.groups !== undefined) clauses.push({ kind: 'any_group', groups: rule.groups })
  if (rule.emails !== undefined || rule.email_domains !== undefined) {
    clauses.push({ kind: 'email', emails: (rule.emails ?? []).map((e) => e.toLowerCase()), domains: (rule.email_domains ?? []).map((d) => d.toLowerCase()) })
  }
  const requirement: Requirement = clauses.length > 0 ? { kind: 'conditions', clauses } : { kind: rule.allow ?? 'deny' }
  const methods = rule.methods === undefined || rule.methods.includes('*') ? null : new Set(rule.methods)
  const hosts = rule.hosts === undefined ? null : hostMatcher(rule.hosts)
  return { name: rule.name ?? where.replace(/ \(line \d+\)/, ''), index, requirement, methods, hosts, patterns, source, granted: grantedBy(requirement) }
}

function hostMatcher (hosts: readonly string[]): HostMatcher {
  const exact = new Set<string>()
  const suffixes: string[] = []
  for (const host of hosts) {
    const h = host.toLowerCase()
    if (h.startsWith('*.')) suffixes.push(h.slice(1))
    else exact.add(normaliseHost(h) ?? h)
  }
  return { exact, suffixes }
}

function patternProblem (pattern: string): string | null {
  if (!pattern.startsWith('/')) return null // the schema says so already
  const segments = pattern.split('/').slice(1)
  if (segments.some((s) => s.includes('**') && s !== '**')) return 'a pattern where ** stands alone as a whole segment'
  if (segments.some((s) => s.startsWith(':') && !isParamSegment(s))) return 'a parameter segment named with letters, digits and _ (:id)'
  try {
    const literal = pattern.replace(/\*+/g, 'x').replace(/(^|\/):[A-Za-z_][A-Za-z0-9_]*/g, '$1x')
    if (matchForm(normalisePath(literal)) !== matchForm(literal)) return 'a normalised path pattern (no //, ., .. or encoded unreserved characters)'
  } catch {
    return 'a normalised path pattern (no ;, no encoded slashes or backslashes, valid escapes)'
  }
  return null
}

/**
 * The rule deciding a request for `method`, a normalised `path` and the request's `host`
 * (a Host header, port and case as sent): the first rule matching the exact spelling (or the
 * fallback), combined with every restricting rule that matches only when case is ignored (see
 * Case above). Without the latter, which is the usual case, the rule itself is returned.
 */
export function matchRule (policy: PolicySet, method: string, path: string, host?: string): PolicyRule {
  const form = matchForm(path)
  const m = method.toUpperCase()
  const h = policy.hasHosts ? normaliseHost(host) : null
  if (!policy.mixedCase && !mayFold(form)) {
    // Patterns and path all lower-case: the case-insensitive match is the exact one, so the
    // first exact match decides alone.
    const i = policy.exact.first(m, h, form)
    return i === -1 ? policy.fallback : policy.rules[i] as PolicyRule
  }
  const exact = policy.exact.all(m, h, form)
  const decided = exact.length === 0 ? policy.fallback : policy.rules[exact[0] as number] as PolicyRule
  // Restricting rules matching some other spelling: those matching this one exactly are the
  // decided rule or shadowed by it, as before.
  const seen = new Set(exact)
  const folded = policy.folded.all(m, h, form).filter((i) => !seen.has(i)).map((i) => policy.rules[i] as PolicyRule)
  return folded.length === 0 ? decided : combine(decided, folded)
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

// The exact-spelling rule, made to require everything the case-folded rules require too.
function combine (decided: PolicyRule, folded: readonly PolicyRule[]): PolicyRule {
  let requirement = decided.requirement
  for (const rule of folded) requirement = both(requirement, rule.requirement)
  return {
    ...decided,
    name: [decided.name, ...folded.map((r) => `${r.name} (other case)`)].join(' + '),
    requirement,
    granted: grantedBy(requirement)
  }
}

function grantedBy (requirement: Requirement): PolicyRule['granted'] {
  if (requirement.kind !== 'conditions') return 'authenticated'
  return requirement.clauses.every((c) => c.kind === 'any_role' || c.kind === 'all_roles') ? 'role_granted' : 'requirements_met'
}

/** A requirement satisfied exactly when both `a` and `b` are. */
function both (a: Requirement, b: Requirement): Requirement {
  if (a.kind === 'deny' || b.kind === 'deny') return { kind: 'deny' }
  if (a.kind === 'public' || a.kind === 'authenticated') return b.kind === 'public' ? a : b
  if (b.kind === 'public' || b.kind === 'authenticated') return a
  return { kind: 'conditions', clauses: [...a.clauses, ...b.clauses] }
}
