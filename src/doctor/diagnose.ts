import { readFileSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { decodeJwt } from 'jose'
import { parse } from 'yaml'
import type { Clock } from '../clock.ts'
import { loadConfig } from '../config/load.ts'
import { REDACTED, redactConfig } from '../config/redact.ts'
import type { Config } from '../config/schema.ts'
import { loadPolicies } from '../authz/policy.ts'
import { configWarnings } from '../cli/config-command.ts'
import { adminUrlOf } from '../cli/status-command.ts'
import type { StatusReport } from '../admin/status.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import { fetchDiscoveryAnswer } from '../keycloak/metadata.ts'
import { createMailer } from '../notify/mailer.ts'
import { fail, pass, warn, type CheckResult } from './checks.ts'
import { openDoctor, type DoctorContext } from './context.ts'

/** Options of {@link diagnose}. */
export interface DiagnoseOptions {
  configPath: string
  env: NodeJS.ProcessEnv
  clock: Clock
  /** The running instance's `/status`, or null when none answers. Default: asked on the admin listener. */
  fetchStatus?: (config: Config) => Promise<StatusReport | null>
}

const HOUR = 3_600_000

/**
 * `gatehouse doctor diagnose`: every layer Gatehouse depends on, checked with the code that
 * `serve` runs (the configuration loader, the migrations, the Keycloak pool and its
 * discovery fetch, the OIDC client's client-credentials grant, the JWKS manager, the sync
 * queue, the policy loader), each with a pass, warn or fail line and the fix to apply.
 * Nothing is migrated or created; the Keycloak calls are the ones a health check makes.
 */
export async function diagnose (options: DiagnoseOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = []
  let config: Config
  try {
    config = loadConfig({ path: options.configPath, env: options.env })
  } catch (err) {
    return [fail('config', (err as Error).message, 'correct the keys named above (every problem is listed); gatehouse config validate checks a file without starting anything')]
  }
  results.push(...configChecks(config, options.configPath))
  const ctx = openDoctor(config, { clock: options.clock })
  try {
    results.push(databaseCheck(ctx))
    results.push(...permissionChecks(config, options.configPath, options.env))
    results.push(...await keycloakChecks(ctx))
    results.push(...await jwksChecks(ctx))
    results.push(...queueChecks(ctx))
    results.push(...await mailChecks(config))
    results.push(await instanceCheck(config, options.fetchStatus ?? askRunningInstance))
  } finally {
    ctx.close()
  }
  return results
}

function configChecks (config: Config, configPath: string): CheckResult[] {
  const out: CheckResult[] = [pass('config', `valid: ${resolve(configPath)} (environment ${config.environment ?? 'none'}, provider ${config.keycloak.kind}, auth.primary ${config.auth.primary})`)]
  for (const w of configWarnings(config)) out.push(warn('config', w, 'make the database location writable for the user serve runs as (or point database.path elsewhere)'))
  try {
    const policy = loadPolicies(resolve(config.base_dir, config.policies.dir), config.policies.default)
    out.push(pass('policies', `${policy.rules.length} rule${policy.rules.length === 1 ? '' : 's'} from ${policy.files.length} file${policy.files.length === 1 ? '' : 's'} in ${policy.dir}; unmatched routes: ${config.policies.default}`))
    for (const w of policy.warnings) out.push(warn('policies', w, 'gatehouse config validate lists the same; add rules or set policies.default on purpose'))
  } catch (err) {
    out.push(fail('policies', (err as Error).message, 'correct the policy file named above; serve refuses to start until it loads'))
  }
  return out
}

function databaseCheck (ctx: DoctorContext): CheckResult {
  const d = ctx.database
  if (d.file === null) return warn('database', 'database.path is :memory:: sessions, cached tokens and the sync queue are lost at every restart', 'set database.path to a file on a volume')
  if (d.error !== null) return fail('database', `${d.file} cannot be opened: ${d.error}`, 'fix the file\'s ownership or the mount (serve fails the same way)')
  if (!d.exists) return warn('database', `${d.file} does not exist yet: serve creates it at its first start`, 'nothing needed; gatehouse doctor fix creates it (and its tables) now')
  if (d.version > d.latest) return fail('database', `schema version ${d.version} is newer than this Gatehouse understands (${d.latest})`, 'run the newer Gatehouse that wrote it, or restore a backup taken before the upgrade')
  if (d.version < d.latest) return warn('database', `schema version ${d.version}; this Gatehouse needs ${d.latest} (pending: ${d.pending.join(', ')})`, 'gatehouse doctor fix applies the migrations (serve applies them too when it starts)')
  const check = ctx.db.pragma('quick_check', { simple: true }) as string
  if (check !== 'ok') return fail('database', `${d.file}: integrity check failed: ${check}`, 'stop Gatehouse and restore the file from a backup (sessions and caches rebuild themselves; users and the sync queue do not)')
  const journal = ctx.db.pragma('journal_mode', { simple: true }) as string
  return pass('database', `${d.file}: schema ${d.version} (current), integrity ok, journal ${journal}`)
}

const octal = (mode: number): string => `0${(mode & 0o777).toString(8)}`

// Where the raw file (before ${VAR} substitution) holds a secret as a literal, not a reference.
function literalSecrets (raw: unknown, redacted: unknown, path: string): string[] {
  if (redacted === REDACTED) return typeof raw === 'string' && !raw.includes('${') ? [path] : Array.isArray(raw) ? raw.flatMap((v, i) => typeof v === 'string' && !v.includes('${') ? [`${path}[${i}]`] : []) : []
  if (Array.isArray(raw) && Array.isArray(redacted)) return raw.flatMap((v, i) => literalSecrets(v, redacted[i], `${path}[${i}]`))
  if (raw !== null && typeof raw === 'object' && redacted !== null && typeof redacted === 'object') {
    return Object.entries(raw).flatMap(([k, v]) => literalSecrets(v, (redacted as Record<string, unknown>)[k], path === '' ? k : `${path}.${k}`))
  }
  return []
}

function permissionChecks (config: Config, configPath: string, env: NodeJS.ProcessEnv): CheckResult[] {
  const out: CheckResult[] = []
  const file = config.database.path === ':memory:' ? null : resolve(config.base_dir, config.database.path)
  if (file !== null) {
    const found: string[] = []
    let worst: 'pass' | 'warn' | 'fail' = 'pass'
    for (const f of [file, `${file}-wal`, `${file}-shm`]) {
      let mode: number
      try { mode = statSync(f).mode } catch { continue }
      if ((mode & 0o006) !== 0) { found.push(`${f} is ${mode & 0o002 ? 'writable' : 'readable'} by every user (${octal(mode)})`); worst = 'fail' } else if ((mode & 0o060) !== 0) { found.push(`${f} is open to its group (${octal(mode)})`); if (worst === 'pass') worst = 'warn' }
    }
    try {
      const dir = statSync(dirname(file))
      if ((dir.mode & 0o002) !== 0 && (dir.mode & 0o1000) === 0) { found.push(`${dirname(file)} is writable by every user (${octal(dir.mode)})`); worst = 'fail' }
    } catch {
      // No directory yet: serve creates it (the database check says so).
    }
    const fix = `chmod 600 ${file}*; chmod 700 ${dirname(file)} (it holds password hashes, session hashes and encrypted tokens; only the user serve runs as needs it)`
    if (worst === 'pass') out.push(pass('permissions: database', found.length === 0 ? `${file} and its directory are private to their owner` : found.join('; ')))
    else if (worst === 'warn') out.push(warn('permissions: database', found.join('; '), fix))
    else out.push(fail('permissions: database', found.join('; '), fix))
  }
  // A secret written into the file (not read from the environment) makes the file a secret.
  let literal: string[] = []
  try {
    const raw = parse(readFileSync(configPath, 'utf8')) as unknown
    literal = literalSecrets(raw, redactConfig(raw), '')
  } catch {
    literal = []
  }
  const mode = statSync(configPath).mode
  if (literal.length === 0) {
    out.push(pass('permissions: secrets', `no secret is written in ${resolve(configPath)}: ${Object.keys(env).length > 0 ? 'they come from the environment' : 'none configured inline'}`))
  } else if ((mode & 0o077) !== 0) {
    out.push(fail('permissions: secrets', `${resolve(configPath)} holds ${literal.join(', ')} in clear and is readable by others (${octal(mode)})`, `move them into the environment (\${VAR} references, e.g. from a Kubernetes Secret or a systemd EnvironmentFile with mode 0600), or chmod 600 ${resolve(configPath)}`))
  } else {
    out.push(warn('permissions: secrets', `${resolve(configPath)} holds ${literal.join(', ')} in clear (the file is ${octal(mode)}: its owner only)`, 'prefer ${VAR} references to the environment, so the file can be shared and versioned'))
  }
  return out
}

function unavailableFix (err: KeycloakUnavailable, server: string, config: Config): string {
  const where = config.keycloak.ha.enabled ? 'keycloak.ha.servers' : 'keycloak.server'
  switch (err.kind) {
    case 'refused': return `nothing accepts connections at ${server}: start Keycloak there, or correct ${where}`
    case 'timeout': return `no answer within keycloak.timeout_ms (${config.keycloak.timeout_ms} ms): check the network path (firewall, NetworkPolicy, proxy) and Keycloak's load`
    case 'http_5xx': return 'Keycloak is failing (5xx): read its log (a realm still starting answers 503)'
    case 'bad_response': return `${server} did not answer as ${config.keycloak.kind === 'keycloak' ? 'Keycloak' : 'an OpenID provider'} (${err.message}): check ${where}${config.keycloak.kind === 'keycloak' ? ', with /auth for a Keycloak that runs under it' : ''}`
    default: return `the connection failed (${err.message}): check DNS and the network path to ${server}`
  }
}

async function keycloakChecks (ctx: DoctorContext): Promise<CheckResult[]> {
  const { config, keycloak, clock } = ctx
  if (!config.feature_flags.keycloak_enabled) return [warn('keycloak', 'feature_flags.keycloak_enabled is false: Gatehouse never calls Keycloak; tokens are checked against the stored keys only', 'set it to true unless this is on purpose')]
  const out: CheckResult[] = []
  const skewLimit = config.tokens.clock_skew_seconds
  let anyAnswered = false
  const undated: string[] = []
  for (const server of keycloak.pool.servers) {
    const name = `keycloak ${server}`
    const started = clock.now()
    const t0 = performance.now()
    try {
      const answer = await keycloak.pool.probe(server, 'health', fetchDiscoveryAnswer)
      const ms = Math.round(performance.now() - t0)
      if (answer === null) { out.push(warn(name, 'not checked: its circuit refused the call', null)); continue }
      anyAnswered = true
      out.push(pass(name, `reachable: discovery answered in ${ms} ms`))
      const issuer = String(answer.document.issuer).replace(/\/+$/, '')
      keycloak.metadata.accept(answer.document, server)
      if (issuer === config.keycloak.issuer) out.push(pass(`issuer ${server}`, `discovery names ${issuer}, as keycloak.issuer does`))
      else {
        out.push(fail(`issuer ${server}`, `discovery names ${issuer}, but keycloak.issuer is ${config.keycloak.issuer}: every token will be refused, and the endpoints are not used`,
          `set keycloak.issuer to ${issuer} if that is the URL browsers reach Keycloak at; otherwise set Keycloak's hostname (KC_HOSTNAME) so that it names ${config.keycloak.issuer}`))
      }
      if (answer.date === null || Number.isNaN(Date.parse(answer.date))) {
        // Keycloak (Quarkus) sends no Date header: the skew is read from a token's iat below.
        undated.push(server)
      } else {
        out.push(skewCheck(`clock ${server}`, started, clock.now(), Date.parse(answer.date), 'its Date header', skewLimit))
      }
    } catch (err) {
      if (err instanceof KeycloakUnavailable) out.push(fail(name, `unreachable: ${err.kind}: ${err.message}`, unavailableFix(err, server, config)))
      else if (err instanceof KeycloakRejected && err.status === 404) out.push(fail(name, `answered 404 for the realm's discovery document (${keycloak.pool.layout.discoveryOn(server)})`, `check the realm in keycloak.issuer (${config.keycloak.realm}) and the server URL${config.keycloak.kind === 'keycloak' ? ' (add /auth for a Keycloak that runs under it)' : ''}`))
      else out.push(fail(name, `refused the discovery request: ${(err as Error).message}`, 'check the server URL and Keycloak\'s log'))
    }
  }
  if (!anyAnswered) {
    out.push(warn('client credentials', 'not checked: no server answered', 'fix reachability first'))
    return out
  }
  const client = await clientCheck(ctx)
  out.push(client.result)
  for (const server of undated) {
    out.push(client.issued === null
      ? warn(`clock ${server}`, 'not measured: the answer had no Date header and no token was issued', 'compare this host\'s clock with Keycloak\'s by hand (date -u on both)')
      : skewCheck(`clock ${server}`, client.issued.started, client.issued.ended, client.issued.iat * 1000, 'the iat of a token it issued (it sends no Date header)', skewLimit))
  }
  if (ctx.sync !== null) out.push(await adminCheck(ctx))
  return out
}

/**
 * This host's clock against Keycloak's: `theirs` (ms, to the second: a Date header, RFC 9110
 * §5.6.7, or a token's `iat`, RFC 7519 §4.1.6) against the middle of the call that got it.
 */
function skewCheck (name: string, started: number, ended: number, theirs: number, from: string, limit: number): CheckResult {
  const skew = Math.round(((started + ended) / 2 - (theirs + 500)) / 1000)
  const words = skew === 0 ? 'in step with Keycloak\'s' : `${Math.abs(skew)} s ${skew > 0 ? 'ahead of' : 'behind'} Keycloak's`
  const fix = `synchronise this host's clock (chrony, or systemd-timesyncd: timedatectl set-ntp true); tokens are checked with tokens.clock_skew_seconds (${limit} s) of tolerance`
  if (Math.abs(skew) > limit) return fail(name, `this host's clock is ${words} (by ${from}): more than tokens.clock_skew_seconds (${limit} s), so fresh tokens look expired or not yet valid`, fix)
  if (Math.abs(skew) * 2 > limit) return warn(name, `this host's clock is ${words} (by ${from}; tolerance ${limit} s)`, fix)
  return pass(name, `this host's clock is ${words} (by ${from}; tolerance ${limit} s)`)
}

// The app client's credentials, through the client-credentials grant the OIDC client makes;
// the verdict is the OIDC client's own `clientAuth` state, which /status reports too.
async function clientCheck (ctx: DoctorContext): Promise<{ result: CheckResult, issued: { iat: number, started: number, ended: number } | null }> {
  const { oidc, clock } = ctx
  const name = 'client credentials'
  let refusedGrant: KeycloakRejected | null = null
  let issued: { iat: number, started: number, ended: number } | null = null
  const none = (result: CheckResult): { result: CheckResult, issued: null } => ({ result, issued: null })
  try {
    const started = clock.now()
    const tokens = await oidc.clientCredentials()
    if (typeof tokens.claims.iat === 'number') issued = { iat: tokens.claims.iat, started, ended: clock.now() }
  } catch (err) {
    if (err instanceof KeycloakUnavailable) return none(fail(name, `not checked: ${err.message}`, 'fix reachability first'))
    if (err instanceof KeycloakRejected) refusedGrant = err
    else return none(fail(name, `the token endpoint's answer could not be read: ${(err as Error).message}`, 'check keycloak.client_auth_method against the provider'))
  }
  return { result: clientVerdict(ctx, refusedGrant), issued }
}

function clientVerdict (ctx: DoctorContext, refusedGrant: KeycloakRejected | null): CheckResult {
  const { config, oidc } = ctx
  const kc = config.keycloak
  const name = 'client credentials'
  const state = oidc.clientAuth
  if (state.state === 'failed') {
    return fail(name, `Keycloak refuses client ${kc.client_id}'s credentials (${state.error ?? 'refused'}): single sign-on logins, refreshes and the sync queue fail`,
      kc.client_auth_method === 'private_key_jwt'
        ? `register the public key of keycloak.client_private_key with client ${kc.client_id} (Credentials: Signed JWT), or correct keycloak.client_key_id`
        : `set keycloak.client_secret to client ${kc.client_id}'s secret (Keycloak admin console: Clients → ${kc.client_id} → Credentials), check keycloak.client_id exists in realm ${kc.realm}${kc.client_secret === undefined ? ', and that the client is public if no secret is configured' : ''}`)
  }
  if (state.state === 'ok') {
    const note = refusedGrant === null ? '' : ` (it may not use the client-credentials grant: ${refusedGrant.oauthError ?? refusedGrant.status}, which Gatehouse needs only for the Admin API)`
    return pass(name, `Keycloak accepts client ${kc.client_id}'s credentials (${kc.client_auth_method})${note}`)
  }
  return warn(name, `not judged: ${refusedGrant?.message ?? 'no answer'}`, null)
}

const ADMIN_ROLES = ['manage-users', 'view-users', 'query-groups']

// The Admin API as the sync worker calls it: a service-account token, then one read.
async function adminCheck (ctx: DoctorContext): Promise<CheckResult> {
  const { config } = ctx
  const clientId = config.keycloak.admin.client_id ?? config.keycloak.client_id
  const name = 'admin api'
  const fixRoles = `give client ${clientId}'s service account the realm-management roles ${ADMIN_ROLES.join(', ')} (Clients → ${clientId} → Service account roles)`
  try {
    const users = await (ctx.sync as NonNullable<DoctorContext['sync']>).api.call(async (kc) => await kc.users.find({ max: 1 }))
    const token = await adminToken(ctx)
    const roles = token === null ? [] : (((decodeJwt(token).resource_access as Record<string, { roles?: string[] }> | undefined)?.['realm-management']?.roles) ?? [])
    const missing = ADMIN_ROLES.filter((r) => !roles.includes(r))
    if (missing.length > 0 && token !== null) return warn(name, `the Admin API answers, but client ${clientId}'s service account lacks ${missing.join(', ')}: some queued writes will fail`, fixRoles)
    return pass(name, `the Admin API answers client ${clientId}'s service account (users readable: ${Array.isArray(users) ? 'yes' : 'no'})`)
  } catch (err) {
    if (err instanceof KeycloakRejected && (err.status === 403 || err.status === 401)) return fail(name, `the Admin API refuses client ${clientId} (${err.status}): the sync queue cannot replay writes`, fixRoles)
    if (err instanceof KeycloakRejected && (err.oauthError === 'unauthorized_client' || err.oauthError === 'invalid_client')) return fail(name, `client ${clientId} cannot get a service-account token (${err.oauthError}): the sync queue cannot replay writes`, `turn on Service accounts for client ${clientId}, or set keycloak.admin.client_id/client_secret to a client that has them; then ${fixRoles}`)
    return fail(name, `the Admin API call failed: ${(err as Error).message}`, 'check Keycloak\'s log; gatehouse sync status shows what waits')
  }
}

async function adminToken (ctx: DoctorContext): Promise<string | null> {
  const { config, oidc } = ctx
  if ((config.keycloak.admin.client_id ?? config.keycloak.client_id) === config.keycloak.client_id) {
    try { return (await oidc.clientCredentials()).accessToken } catch { return null }
  }
  return null
}

async function jwksChecks (ctx: DoctorContext): Promise<CheckResult[]> {
  const { config, keycloak, clock } = ctx
  const jwks = keycloak.jwks
  const storedAge = jwks.ageSeconds()
  const storedKeys = jwks.keyIds().length
  const grace = keycloak.gracePeriodMs
  const refreshed = config.feature_flags.keycloak_enabled && keycloak.pool.reachable() ? await jwks.refresh('manual') : false
  if (refreshed) {
    const stale = storedAge !== null && storedAge > 2 * config.keycloak.jwks.refresh_interval_seconds
    const detail = `${jwks.keyIds().length} signing key${jwks.keyIds().length === 1 ? '' : 's'} (${jwks.keyIds().join(', ')}) fetched now; the stored copy was ${storedAge === null ? 'missing' : `${Math.round(storedAge)} s old`}`
    return [stale && ctx.onFile ? warn('jwks', `${detail}: older than two refresh intervals`, 'if serve is running, it cannot refresh its keys: check its log for "jwks refresh failed"') : pass('jwks', detail)]
  }
  if (storedKeys === 0) return [fail('jwks', 'no signing keys: none stored and none could be fetched, so no bearer token can be verified', 'make Keycloak reachable (see above); the keys are fetched at once and stored')]
  const usableUntil = (jwks.fetchedAt as number) + grace
  if (usableUntil <= clock.now()) return [fail('jwks', `the stored keys are ${Math.round((storedAge ?? 0) / 3600)} h old: past keycloak.resilience.token_grace_period_hours, so they are no longer used`, 'make Keycloak reachable; the keys are fetched at once')]
  return [warn('jwks', `Keycloak unreachable: the ${storedKeys} stored key${storedKeys === 1 ? '' : 's'} (${Math.round((storedAge ?? 0) / 60)} min old) stay usable until ${new Date(usableUntil).toISOString()}`, 'make Keycloak reachable before then')]
}

function queueChecks (ctx: DoctorContext): CheckResult[] {
  const { config, clock } = ctx
  if (ctx.sync === null) return [pass('sync queue', 'none: a generic provider has no Admin API to replay to')]
  if (!ctx.onFile) return [warn('sync queue', 'not checked: the database is not there or not current', 'see the database line')]
  const queue = ctx.sync.queue
  const now = clock.now()
  const stats = queue.stats(now)
  const stuck = queue.expiredLeases(now)
  const failed = queue.failedSince(now - HOUR)
  const b = stats.byStatus
  const counts = `${b.pending} pending, ${b.processing} processing, ${b.failed} failed, ${b.dead} dead`
  const out: CheckResult[] = []
  if (stuck > 0) out.push(warn('sync queue', `${stuck} item${stuck === 1 ? ' is' : 's are'} held by a worker whose lease ran out (it died or hangs)`, 'gatehouse doctor fix gives them back (the next worker cycle also takes them)'))
  if (b.dead > 0) out.push(warn('sync queue', `${b.dead} dead item${b.dead === 1 ? '' : 's'}${stats.lastError !== null ? `; last error: ${stats.lastError.operation} for ${stats.lastError.username}: ${stats.lastError.error}` : ''}`, 'fix the cause Keycloak names, then gatehouse sync retry --all-dead (a dead password change needs a new one)'))
  if (failed > config.alerts.failed_sync_threshold) out.push(warn('sync queue', `${failed} items failed in the last hour (alerts.failed_sync_threshold ${config.alerts.failed_sync_threshold})`, 'gatehouse sync status shows the errors'))
  if ((stats.oldestPendingSeconds ?? 0) > 3600) out.push(warn('sync queue', `the oldest unfinished item waits for ${Math.round((stats.oldestPendingSeconds ?? 0) / 60)} min`, config.sync.enabled ? 'is Keycloak reachable from serve? (a worker replays only while it is)' : 'sync.enabled is false: is gatehouse sync start running?'))
  if (out.length === 0) out.push(pass('sync queue', `${counts}; oldest unfinished ${stats.oldestPendingSeconds === null ? 'none' : `${stats.oldestPendingSeconds} s`}`))
  return out
}

async function mailChecks (config: Config): Promise<CheckResult[]> {
  const users = [config.alerts.enabled && config.alerts.email.enabled ? 'alerts.email' : null, config.password_reset.enabled ? 'password_reset' : null].filter((u) => u !== null)
  if (users.length === 0) return []
  const mailer = createMailer(config.smtp)
  if (mailer === null) return [fail('smtp', `${users.join(' and ')} need smtp.host and smtp.from`, 'set them (config validate says the same)')]
  try {
    await mailer.verify()
    return [pass('smtp', `${config.smtp.host}:${config.smtp.port} accepts a connection${config.smtp.tls === 'none' ? '' : ` with ${config.smtp.tls} TLS`}${config.smtp.username !== undefined ? ' and the credentials' : ''} (used by ${users.join(' and ')})`)]
  } catch (err) {
    return [fail('smtp', `${config.smtp.host}:${config.smtp.port}: ${(err as Error).message}`, 'check smtp.host, smtp.port, smtp.tls (starttls for 587, implicit for 465) and the credentials')]
  } finally {
    mailer.close()
  }
}

/** Asks the instance this configuration describes for its `/status`; null when none answers. */
export async function askRunningInstance (config: Config): Promise<StatusReport | null> {
  try {
    const response = await fetch(`${adminUrlOf(config)}/status`, { signal: AbortSignal.timeout(1000) })
    return response.ok ? await response.json() as StatusReport : null
  } catch {
    return null
  }
}

async function instanceCheck (config: Config, fetchStatus: (config: Config) => Promise<StatusReport | null>): Promise<CheckResult> {
  const report = await fetchStatus(config)
  const url = adminUrlOf(config)
  if (report === null) return warn('running instance', `none answers at ${url}/status`, 'start it (gatehouse serve), or check admin.host and admin.port')
  const kc = report.keycloak
  if (kc.client_auth.state === 'failed') return fail('running instance', `mode ${report.mode}; it reports keycloak.client_auth failed (${kc.client_auth.error ?? ''}) since ${kc.client_auth.since ?? '?'}`, 'correct keycloak.client_secret (see client credentials) and restart it')
  const open = kc.servers.filter((s) => s.state !== 'closed').map((s) => s.server)
  if (report.mode !== 'normal') return warn('running instance', `mode ${report.mode}${open.length > 0 ? `; open circuits: ${open.join(', ')}` : ''}`, 'see the keycloak lines above; gatehouse doctor fix resets its circuits once Keycloak answers again')
  return pass('running instance', `mode normal at ${url} (Gatehouse ${report.version}, up ${report.uptime_seconds} s)${open.length > 0 ? `; open circuits: ${open.join(', ')}` : ''}`)
}
