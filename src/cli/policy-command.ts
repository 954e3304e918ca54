import type { Readable } from 'node:stream'
import { resolve } from 'node:path'
import { deciderDepsFor, tokenVerifier, claimsReader } from '../app.ts'
import { loadPolicies, type PolicySet } from '../authz/policy.ts'
import { describeSource, explainIdentity, type Grant, type Source } from '../authz/roles.ts'
import { systemClock } from '../clock.ts'
import { loadConfig } from '../config/load.ts'
import type { Config } from '../config/schema.ts'
import { createDecider, bearerToken, type Decision, type RequestFacts } from '../decision/decide.ts'
import { UsageError } from '../errors.ts'
import type { Identity } from '../identity.ts'
import { identityFromClaims } from '../keycloak/claims.ts'
import { createKeycloakClient } from '../keycloak/client.ts'
import type { AccessTokenVerifier } from '../keycloak/verify-token.ts'
import { createLogger } from '../log.ts'
import { createMetrics } from '../metrics/registry.ts'
import { localIdentityOf } from '../session/login.ts'
import { openConfiguredDatabase, openDatabase, type Db } from '../store/db.ts'
import { SessionsRepository } from '../store/sessions.ts'
import { UsersRepository } from '../store/users.ts'
import { emit, type Output } from './output.ts'

/** Exit code of `policy check` when the request would not be let through (denied, or sent to log in). */
export const POLICY_CHECK_REFUSED = 3

/** What `gatehouse policy` takes. */
export interface PolicyCommandOptions {
  configPath: string
  env: NodeJS.ProcessEnv
  json: boolean
  /** Where `--token -` is read from. */
  stdin: Readable
  user?: string | undefined
  token?: string | undefined
  roles?: string | undefined
  groups?: string | undefined
  email?: string | undefined
  method?: string | undefined
  path?: string | undefined
  host?: string | undefined
}

/** `gatehouse policy validate [DIR] | check …`. */
export async function runPolicyCommand (sub: string | undefined, args: readonly string[], options: PolicyCommandOptions, output: Output): Promise<number> {
  switch (sub) {
    case 'validate':
      return validate(args, options, output)
    case 'check':
      if (args.length > 0) throw new UsageError(`policy check takes no arguments (received ${JSON.stringify(args[0])}); run gatehouse policy --help`)
      return await check(options, output)
    default:
      throw new UsageError(`unknown policy subcommand ${JSON.stringify(sub ?? '')}: use validate or check`)
  }
}

// The configured directory, or DIR (checked without a configuration file: CI validates a
// change before any config exists). Problems throw PolicyError: exit 2, each with file and line.
function validate (args: readonly string[], options: PolicyCommandOptions, output: Output): number {
  if (args.length > 1) throw new UsageError('usage: gatehouse policy validate [DIR]')
  const given = args[0]
  const policy = given !== undefined
    ? loadPolicies(resolve(given), 'authenticated')
    : (() => { const config = loadConfig({ path: options.configPath, env: options.env }); return loadPolicies(resolve(config.base_dir, config.policies.dir), config.policies.default) })()
  for (const warning of policy.warnings) output.err(`gatehouse: warning: ${policy.dir}: ${warning}`)
  const summary = { valid: true, dir: policy.dir, version: policy.version, files: policy.files, rules: policy.rules.length, roles: policy.roles.defined.size, group_mappings: policy.roles.groupRoles.size, role_mappings: policy.roles.tokenRoles.size, warnings: policy.warnings }
  emit(output, options.json, summary, () =>
    `policies are valid: ${policy.dir} (${policy.version}; ${count(policy.rules.length, 'rule')}, ${count(policy.roles.defined.size, 'role')}, ` +
    `${count(policy.roles.groupRoles.size, 'group mapping')}, ${count(policy.roles.tokenRoles.size, 'role mapping')} from ${count(policy.files.length, 'file')})`)
  return 0
}

const count = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`

/** Whose request is checked, and where their roles come from. */
interface Subject {
  /** `token`, `user` (the users table), `session` (a live session's stored identity) or `command line`. */
  kind: 'token' | 'user' | 'session' | 'command line'
  /** The request's headers: a bearer token, or none (the identity source answers). */
  headers: RequestFacts['headers']
  /** The identity the synthetic session source hands `decide()`; null for a token. */
  identity: Identity | null
  /** The identity before policies, for the explanation (for a token: once verified). */
  raw: (decision: Decision) => Identity | null
  ownRoles: (role: string) => Source
}

/**
 * `policy check`: builds the decider `serve` builds (the same `createDecider`, the same
 * dependencies through `deciderDepsFor`) with the identity source replaced, asks it the
 * request, and explains the answer. A token goes through the real verifier over the stored
 * JWKS; a user or role list comes in as a session's identity would.
 */
async function check (options: PolicyCommandOptions, output: Output): Promise<number> {
  const sources = [options.user, options.token, options.roles].filter((v) => v !== undefined).length
  if (sources !== 1) throw new UsageError('policy check needs exactly one of --user U, --token JWT (or --token - to read it from standard input) or --roles a,b; run gatehouse policy --help')
  if ((options.groups !== undefined || options.email !== undefined) && options.roles === undefined) throw new UsageError('--groups and --email go with --roles only; run gatehouse policy --help')
  if (options.path === undefined) throw new UsageError('policy check needs --path P; run gatehouse policy --help')
  const config = loadConfig({ path: options.configPath, env: options.env })
  const policy = loadPolicies(resolve(config.base_dir, config.policies.dir), config.policies.default)
  const log = createLogger({ level: 'silent' })
  const metrics = createMetrics()
  // A user, a session or a token's keys are in the store; a role list needs none, so nothing is
  // opened (or created) for it, and the verifier, which it never reaches, reads an empty one.
  const db: Db = options.roles === undefined ? openConfiguredDatabase(config).db : openDatabase({ path: ':memory:' }).db
  try {
    const keycloak = createKeycloakClient(config, { db, clock: systemClock, log, metrics })
    keycloak.jwks.load()
    const verifier = tokenVerifier(config, keycloak.jwks, systemClock, metrics)
    const subject = await subjectOf(config, db, options, verifier)
    const deps = deciderDepsFor(config, {
      policy: { current: policy },
      verifier,
      log,
      sessions: { identify: async () => subject.identity }
    })
    const decide = createDecider(deps)
    const method = (options.method ?? 'GET').toUpperCase()
    const decision = await decide({ entry: 'proxy', method, target: options.path, headers: subject.headers, ...(options.host !== undefined ? { host: options.host } : {}) })
    const report = reportOf(decision, subject, policy, config, { method, path: options.path, host: options.host ?? null })
    emit(output, options.json, report, () => textOf(report))
    return decision.kind === 'allow' ? 0 : POLICY_CHECK_REFUSED
  } finally {
    db.close()
  }
}

async function subjectOf (config: Config, db: Db, options: PolicyCommandOptions, verifier: AccessTokenVerifier): Promise<Subject> {
  const claims = claimsReader(config)
  if (options.token !== undefined) {
    const token = options.token === '-' ? (await readAll(options.stdin)).trim() : options.token
    if (bearerToken(`Bearer ${token}`) === null) throw new UsageError('--token needs a JWT (or - to read one from standard input)')
    return {
      kind: 'token',
      headers: { authorization: `Bearer ${token}` },
      identity: null,
      // The claims decide() verified (the verifier remembers them): the identity before expansion.
      // With tokens.cache_max_entries 0 nothing is remembered: the payload decide() just
      // verified is read again.
      raw: () => {
        const outcome = verifier.remembered(token)
        const payload = outcome?.ok === true ? outcome.token.claims : JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>
        return identityFromClaims(payload, claims, null)
      },
      ownRoles: (role) => ({ from: 'token_claim', claim: claimOfRole(role, config) })
    }
  }
  if (options.roles !== undefined) {
    const identity: Identity = Object.freeze({
      user: 'policy-check',
      preferredUsername: null,
      email: options.email ?? null,
      // Given on the command line: taken as verified, to ask what a verified address may do.
      emailVerified: options.email !== undefined,
      groups: list(options.groups),
      roles: list(options.roles),
      authMode: 'local' as const,
      accessToken: null,
      expiresAt: null
    })
    return { kind: 'command line', headers: {}, identity, raw: () => identity, ownRoles: () => ({ from: 'command_line' }) }
  }
  const username = options.user as string
  const user = new UsersRepository(db).find(username)
  if (user !== null) {
    const identity: Identity = Object.freeze({ ...localIdentityOf(user), authMode: user.source === 'keycloak' ? 'cached' as const : 'local' as const, accessToken: null, expiresAt: null })
    return { kind: 'user', headers: {}, identity, raw: () => identity, ownRoles: () => ({ from: 'local_roles' }) }
  }
  // No such user: the newest live session of that name, as its cookie would be decided.
  const session = new SessionsRepository(db).list({ username })[0]
  if (session === undefined) throw new UsageError(`no local user and no live session named ${JSON.stringify(username)}`)
  const identity: Identity = Object.freeze({ ...session.identity, authMode: session.mode, accessToken: null, expiresAt: null })
  return {
    kind: 'session',
    headers: {},
    identity,
    raw: () => identity,
    ownRoles: (role) => session.mode === 'keycloak' ? { from: 'token_claim', claim: claimOfRole(role, config) } : { from: 'local_roles' }
  }
}

// Which configured claim path a token role came from: `client:role` from the `{client}` path
// of its client, others from the first path without one.
function claimOfRole (role: string, config: Config): string {
  const paths = config.claims.roles
  const colon = role.indexOf(':')
  if (colon > 0) {
    const client = role.slice(0, colon)
    const templated = paths.find((p) => p.includes('{client}'))
    if (templated !== undefined && claimsReader(config).clientIds.includes(client)) return templated.replace('{client}', client)
  }
  return paths.find((p) => !p.includes('{client}')) ?? paths[0] ?? 'roles'
}

function list (value: string | undefined): string[] {
  return (value ?? '').split(',').map((v) => v.trim()).filter((v) => v !== '')
}

async function readAll (stream: Readable): Promise<string> {
  let text = ''
  for await (const chunk of stream) text += String(chunk)
  return text
}

/** What `policy check` prints (with `--json`, as is). */
interface CheckReport {
  request: { method: string, path: string, host: string | null }
  decision: Decision['kind']
  status: number
  reason: string
  rule: string | null
  /** Where each rule that decided is written: `app.yaml (line 12)`. */
  rule_sources: string[]
  missing: string | null
  location: string | null
  identity: { source: Subject['kind'], user: string, auth_mode: string, email: string | null, email_verified: boolean, groups: readonly string[] } | null
  roles: Array<{ name: string, sources: string[] }>
  permissions: Array<{ name: string, sources: string[] }>
  /** Identity headers the app would get (an access token is never shown). */
  headers: Record<string, string>
  policy_version: string
}

function reportOf (decision: Decision, subject: Subject, policy: PolicySet, config: Config, request: CheckReport['request']): CheckReport {
  const identity = decision.kind === 'redirect' ? null : decision.identity
  const raw = identity === null ? null : subject.raw(decision)
  const explained = raw === null ? { roles: [], permissions: [] } : explainIdentity(raw, policy.roles, subject.ownRoles)
  const words = (grants: Grant[]): Array<{ name: string, sources: string[] }> => grants.map((g) => ({ name: g.name, sources: g.sources.map(describeSource) }))
  const ruleNames = decision.rule === null ? [] : decision.rule.split(' + ').map((n) => n.replace(/ \(other case\)$/, ''))
  const secretHeaders = new Set([config.headers.access_token.toLowerCase(), 'authorization'])
  return {
    request,
    decision: decision.kind,
    status: decision.kind === 'allow' ? 200 : decision.kind === 'redirect' ? 302 : decision.status,
    reason: decision.reason,
    rule: decision.rule,
    rule_sources: ruleNames.map((n) => [...policy.rules, policy.fallback].find((r) => r.name === n)?.source ?? '?'),
    missing: decision.kind === 'deny' ? decision.missing ?? null : null,
    location: decision.kind === 'redirect' ? decision.location : null,
    identity: identity === null
      ? null
      : { source: subject.kind, user: identity.user, auth_mode: identity.authMode, email: identity.email, email_verified: identity.emailVerified === true, groups: identity.groups },
    roles: words(explained.roles),
    permissions: words(explained.permissions),
    headers: decision.kind === 'allow' ? Object.fromEntries(Object.entries(decision.headers).map(([k, v]) => [k, secretHeaders.has(k) ? '[redacted]' : v])) : {},
    policy_version: policy.version
  }
}

function textOf (r: CheckReport): string {
  const lines = [
    `${r.request.method} ${r.request.path}${r.request.host === null ? '' : ` (host ${r.request.host})`}: ${r.decision.toUpperCase()} ${r.status} (${r.reason})`,
    `rule: ${r.rule ?? '-'}${r.rule_sources.length > 0 ? ` [${r.rule_sources.join(', ')}]` : ''}`
  ]
  if (r.missing !== null) lines.push(`missing: ${r.missing}`)
  if (r.location !== null) lines.push(`location: ${r.location}`)
  if (r.identity !== null) {
    const i = r.identity
    lines.push(`identity: ${i.user} (${i.source}, mode ${i.auth_mode})${i.email === null ? '' : `, e-mail ${i.email}${i.email_verified ? ' (verified)' : ' (not verified)'}`}`)
    lines.push(`groups: ${i.groups.length === 0 ? '-' : i.groups.join(', ')}`)
  }
  const grants = (title: string, rows: CheckReport['roles']): void => {
    lines.push(`${title}:${rows.length === 0 ? ' -' : ''}`)
    const width = Math.max(0, ...rows.map((g) => g.name.length))
    for (const g of rows) lines.push(`  ${g.name.padEnd(width)}  ${g.sources.join('; ')}`)
  }
  if (r.identity !== null) {
    grants('roles', r.roles)
    grants('permissions', r.permissions)
  }
  for (const [name, value] of Object.entries(r.headers)) lines.push(`header ${name}: ${value}`)
  lines.push(`policies: ${r.policy_version}`)
  return lines.join('\n')
}
