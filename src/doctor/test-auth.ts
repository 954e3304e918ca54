import { cachedMaterialUsable, computeMode, type Mode } from '../breaker/mode.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import { LoginService } from '../session/login.ts'
import { localLoginAllowed } from '../session/local-allow.ts'
import { verifyPassword } from '../session/passwords.ts'
import { AuditLogRepository } from '../store/audit-log.ts'
import { openSessionStore } from '../store/open-session-store.ts'
import { SessionsRepository } from '../store/sessions.ts'
import { TokenCacheRepository } from '../store/token-cache.ts'
import { UsersRepository } from '../store/users.ts'
import type { DoctorContext } from './context.ts'

/** Whether one layer lets the user in now. */
export type LayerVerdict = 'yes' | 'no' | 'if the password is right' | 'not used'

/** What one layer says about the user. */
export interface LayerReport {
  layer: 'local' | 'keycloak' | 'token cache' | 'sync queue'
  verdict: LayerVerdict
  facts: string[]
}

/** What `doctor test-auth USER` found. */
export interface TestAuthReport {
  user: string
  mode: Mode
  /** Whether a password was given (and so checked). */
  password_checked: boolean
  layers: LayerReport[]
  /** Would a login on the form succeed now, and what decides it. */
  login_now: { verdict: LayerVerdict, by: string }
  /** Would a login succeed if Keycloak went away now. */
  login_if_keycloak_down: { verdict: LayerVerdict, by: string }
}

const iso = (ms: number | null): string => ms === null ? 'never' : new Date(ms).toISOString()

/**
 * `gatehouse doctor test-auth USER`: walks one user through each layer (DESIGN §1) with the
 * code that decides (the user table and its lockout, `local_auth.allow`, cached credentials,
 * Keycloak's Admin API and password grant, the session store and token cache, the sync
 * queue) and says which would let them in now and which would if Keycloak went away. With a
 * password, it is checked against the local hash and by a Keycloak password grant; such a
 * check is not counted toward Gatehouse's lockout (Keycloak's own brute-force detection
 * does count it).
 */
export async function testAuth (ctx: DoctorContext, username: string, password: string | null): Promise<TestAuthReport> {
  const { config, db, keycloak, oidc, clock, log } = ctx
  const now = clock.now()
  await keycloak.health.round()
  const grace = keycloak.gracePeriodMs
  const tokens = new TokenCacheRepository(db, ctx.ring)
  const mode = computeMode({ keycloakReachable: () => keycloak.pool.reachable(), cachedCredentialsUsable: () => cachedMaterialUsable(keycloak.jwks.ageSeconds(), grace, () => tokens.countUsable(now, grace)) })
  const users = new UsersRepository(db)
  // The lockout counters live where `store.sessions` keeps them (Redis is shared by replicas).
  const store = openSessionStore(config, { db, ring: ctx.ring, clock, log })
  await store.start()
  const login = new LoginService({
    config, users, attempts: store, audit: new AuditLogRepository(db), pool: keycloak.pool, oidc, clock, log,
    claims: { mapping: config.claims, clientIds: [config.keycloak.client_id, ...config.keycloak.audiences] }, logins: { inc: () => {} }
  })
  const user = users.find(username)
  let locked: number | null
  try {
    locked = await login.lockedFor(username, null)
  } finally {
    await store.close()
  }
  const layers: LayerReport[] = []

  // Layer 1: Gatehouse's own table (local users, and cached credentials of Keycloak users).
  const local: LayerReport = { layer: 'local', verdict: 'no', facts: [] }
  let localMatches: boolean | null = null
  if (user === null) {
    local.facts.push('no user of this name in Gatehouse\'s table (no local user, no cached credential)')
  } else {
    const allowed = localLoginAllowed(config.local_auth.allow, user.roles)
    local.facts.push(user.source === 'local' ? 'a local user' : `a cached credential of a Keycloak user (${user.keycloakId ?? 'no id'}), valid until ${iso(user.credentialExpiresAt)}`)
    local.facts.push(`enabled: ${user.enabled ? 'yes' : 'no'}; roles: ${user.roles.join(', ') || 'none'}; local_auth.allow ${allowed ? 'lets them in without Keycloak' : `(${JSON.stringify(config.local_auth.allow)}) does not let them in without Keycloak`}`)
    if (locked !== null) local.facts.push(`locked out for ${locked} s more (security.max_failed_attempts failed logins)`)
    if (user.passwordHash === null) local.facts.push('no password hash: cannot log in locally')
    else if (password !== null) {
      localMatches = await verifyPassword(password, user.passwordHash)
      local.facts.push(`the password given ${localMatches ? 'matches' : 'does not match'} the stored hash`)
    }
    const fresh = user.source === 'local' || (user.credentialExpiresAt ?? 0) > now
    if (user.source === 'keycloak' && !fresh) local.facts.push('the cached credential has expired')
    if (user.source === 'keycloak' && !config.keycloak.resilience.allow_offline_mode) local.facts.push('keycloak.resilience.allow_offline_mode is false: cached credentials are not used')
    const usable = user.enabled && user.passwordHash !== null && allowed && locked === null && fresh && (user.source === 'local' || config.keycloak.resilience.allow_offline_mode)
    local.verdict = !usable ? 'no' : localMatches === null ? 'if the password is right' : localMatches ? 'yes' : 'no'
  }
  layers.push(local)

  // Layer 2: Keycloak.
  const kc: LayerReport = { layer: 'keycloak', verdict: 'no', facts: [] }
  let keycloakVerdict: LayerVerdict = 'no'
  if (!config.feature_flags.keycloak_enabled) {
    kc.verdict = 'not used'
    kc.facts.push('feature_flags.keycloak_enabled is false')
  } else if (!keycloak.pool.reachable()) {
    kc.facts.push(`unreachable now (${keycloak.pool.status().map((s) => `${s.server}: ${s.lastErrorKind ?? s.state}`).join('; ')})`)
  } else {
    kc.facts.push('reachable')
    let exists: boolean | null = null
    if (ctx.sync !== null) {
      try {
        const found = await ctx.sync.api.call(async (api) => await api.users.find({ username, exact: true }))
        const account = found[0]
        exists = account !== undefined
        if (account === undefined) kc.facts.push(`no user ${username} in realm ${config.keycloak.realm}`)
        else {
          kc.facts.push(`user ${account.id ?? '?'} in realm ${config.keycloak.realm}: enabled ${account.enabled === true ? 'yes' : 'no'}, e-mail verified ${account.emailVerified === true ? 'yes' : 'no'}`)
          if ((account.requiredActions ?? []).length > 0) kc.facts.push(`required actions pending (${(account.requiredActions ?? []).join(', ')}): Keycloak refuses password grants until they are done on its own pages`)
          if (account.enabled !== true) exists = false
        }
      } catch (err) {
        kc.facts.push(`the Admin API could not look the user up: ${(err as Error).message}`)
      }
    }
    if (password !== null) {
      try {
        await oidc.passwordGrant(username, password)
        keycloakVerdict = 'yes'
        kc.facts.push('Keycloak accepts the password given (password grant)')
      } catch (err) {
        if (err instanceof KeycloakRejected) kc.facts.push(`Keycloak refuses the password grant: ${err.message}`)
        else if (err instanceof KeycloakUnavailable) kc.facts.push(`the password grant failed: ${err.message}`)
        else kc.facts.push(`the password grant failed: ${(err as Error).message}`)
      }
    } else keycloakVerdict = exists === false ? 'no' : 'if the password is right'
    kc.verdict = keycloakVerdict
  }
  layers.push(kc)

  // Layer 3: sessions it already has, and their cached Keycloak tokens.
  const sessions = new SessionsRepository(db).list({ username }).filter((s) => s.endedAt === null && s.expiresAt > now)
  const cache: LayerReport = { layer: 'token cache', verdict: sessions.length > 0 ? 'yes' : 'no', facts: [] }
  if (sessions.length === 0) cache.facts.push('no live session')
  for (const s of sessions) {
    const t = tokens.get(s.id)
    const usable = t === null ? null : t.accessExpiresAt > now || t.cachedAt > now - grace
    cache.facts.push(`session ${s.id} (mode ${s.mode}, last seen ${iso(s.lastSeenAt)}, ends by ${iso(s.expiresAt)})${t === null ? '' : `: Keycloak tokens ${usable === true ? `usable until ${iso(Math.max(t.accessExpiresAt, t.cachedAt + grace))}` : 'past the grace period'}`}`)
  }
  layers.push(cache)

  // Layer 4: writes still waiting for Keycloak.
  const pendingWrites = ctx.sync === null ? [] : ctx.sync.queue.list().filter((i) => i.username.toLowerCase() === username.toLowerCase() && i.status !== 'done')
  layers.push({
    layer: 'sync queue',
    verdict: 'not used',
    facts: ctx.sync === null
      ? ['none (a generic provider)']
      : pendingWrites.length === 0 ? ['nothing waits for Keycloak'] : pendingWrites.map((i) => `${i.operation} ${i.status} since ${iso(i.queuedAt)}${i.lastError !== null ? ` (${i.lastError})` : ''}${i.operation === 'password_change' ? ': Keycloak still has the previous password' : ''}`)
  })

  const primary = config.auth.primary
  const loginNow = primary === 'local'
    ? { verdict: user?.source === 'local' ? local.verdict : 'no' as LayerVerdict, by: 'the local password (auth.primary local)' }
    : keycloak.pool.reachable()
      ? { verdict: best(keycloakVerdict, user?.source === 'local' ? local.verdict : 'no'), by: user?.source === 'local' ? 'Keycloak, then the local break-glass user' : 'Keycloak (auth.primary keycloak)' }
      : { verdict: local.verdict, by: user?.source === 'keycloak' ? 'the cached credential (Keycloak unreachable)' : 'the local user (Keycloak unreachable)' }
  const ifDown = { verdict: local.verdict, by: user === null ? 'nothing: no local user or cached credential' : user.source === 'keycloak' ? 'the cached credential' : 'the local user' }
  return { user: username, mode, password_checked: password !== null, layers, login_now: loginNow, login_if_keycloak_down: ifDown }
}

function best (a: LayerVerdict, b: LayerVerdict): LayerVerdict {
  const order: LayerVerdict[] = ['yes', 'if the password is right', 'no', 'not used']
  return order[Math.min(order.indexOf(a), order.indexOf(b))] as LayerVerdict
}

/** The report as text. */
export function formatTestAuth (r: TestAuthReport): string {
  return [
    `user ${r.user}; mode ${r.mode}; ${r.password_checked ? 'password checked' : 'no password given (pipe one on standard input to check it)'}`,
    '',
    ...r.layers.flatMap((l) => [`${l.layer}: ${l.verdict}`, ...l.facts.map((f) => `  ${f}`)]),
    '',
    `login now: ${r.login_now.verdict}, decided by ${r.login_now.by}`,
    `if Keycloak went away: ${r.login_if_keycloak_down.verdict}, by ${r.login_if_keycloak_down.by}`
  ].join('\n')
}
