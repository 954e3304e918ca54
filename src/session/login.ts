import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import type { ClaimsReader } from '../keycloak/claims.ts'
import type { KeycloakPool } from '../keycloak/failover.ts'
import { clientAuthRefused, type OidcClient, type TokenSet } from '../keycloak/oidc.ts'
import type { AuditLogRepository } from '../store/audit-log.ts'
import { lockoutLeft, type AttemptReservation, type AttemptResult, type LockoutPolicy, type SessionStore } from '../store/session-store.ts'
import type { SessionMode } from '../store/sessions.ts'
import type { UserRecord, UsersRepository } from '../store/users.ts'
import { localLoginAllowed } from './local-allow.ts'
import { DEFAULT_SCRYPT, hashPassword, needsRehash, unmatchableHash, verifyPassword } from './passwords.ts'
import { storedIdentityOf, subjectOf, type NewSession, type StoredIdentity } from './service.ts'

/** Why a login failed, as the audit log and metrics name it. */
export type LoginFailure = 'bad_credentials' | 'locked' | 'disabled' | 'local_not_allowed' | 'unavailable' | 'sso_misconfigured'

/** The outcome of one login attempt. */
export type LoginOutcome =
  | { ok: true, session: Omit<NewSession, 'ip' | 'userAgent'> }
  | { ok: false, reason: LoginFailure, status: 401 | 403 | 429 | 502 | 503, message: string, retryAfterSeconds?: number }

/** What {@link LoginService} needs. */
export interface LoginDeps {
  config: Config
  users: UsersRepository
  /** The lockout counters: the session store's, shared by every replica when it is Redis. */
  attempts: Pick<SessionStore, 'reserveAttempt' | 'settleAttempt' | 'failures'>
  audit: AuditLogRepository
  pool: KeycloakPool
  oidc: OidcClient
  clock: Clock
  log: Logger
  /** How claims become an identity. */
  claims: ClaimsReader
  logins: { inc: (labels: { mode: string, result: string }) => void }
}

// Verified against when the user does not exist, so an unknown name costs as long as a
// wrong password and the answer does not tell which it was.
const DUMMY_HASH = unmatchableHash(DEFAULT_SCRYPT)

const BAD_CREDENTIALS = 'Invalid user name or password.'

/**
 * Password logins on Gatehouse's own form: dual authentication per `auth.primary`
 * (DESIGN §1), cached credentials, `local_auth.allow`, and lockout per user and per client
 * address. Every attempt is counted and audited; no password is ever logged or stored in
 * plain text.
 */
export class LoginService {
  readonly #deps: LoginDeps

  constructor (deps: LoginDeps) {
    this.#deps = deps
  }

  /**
   * Authenticates one attempt; on success, says what session to start. The attempt is
   * counted before its password is checked ({@link reserve}), so concurrent guesses cannot
   * outrun the lockout.
   */
  async login (username: string, password: string, ip: string | null): Promise<LoginOutcome> {
    const name = username.trim()
    const reservation = await this.reserve(name, ip)
    if ('lockedForSeconds' in reservation) {
      this.#audit(name, ip, 'lockout', 'failure', null, 'locked')
      this.#deps.logins.inc({ mode: 'none', result: 'locked' })
      return { ok: false, reason: 'locked', status: 429, message: 'Too many failed sign-in attempts. Try again later.', retryAfterSeconds: reservation.lockedForSeconds }
    }
    const outcome = name === '' || password === ''
      ? { ok: false as const, reason: 'bad_credentials' as const, status: 401 as const, message: BAD_CREDENTIALS }
      : this.#deps.config.auth.primary === 'local' ? await this.#localPrimary(name, password) : await this.#keycloakPrimary(name, password)
    await this.#record(reservation.id, name, ip, outcome)
    return outcome
  }

  /**
   * Counts an attempt for `username` from `ip` as a failure before its password is checked,
   * unless the user or the address is locked out (then nothing is counted). Settle it with
   * {@link settle} once the check is done.
   */
  async reserve (username: string, ip: string | null): Promise<AttemptReservation> {
    const { security } = this.#deps.config
    const now = this.#deps.clock.now()
    const since = now - Math.max(security.window_minutes, security.lockout_minutes) * 60_000
    return await this.#deps.attempts.reserveAttempt({ username, ip, channel: 'form' }, now, since, lockoutPolicy(security))
  }

  /** Settles a reserved attempt (see {@link SessionStore.settleAttempt}). */
  async settle (id: string, result: AttemptResult): Promise<void> {
    await this.#deps.attempts.settleAttempt(id, result)
  }

  /**
   * A login completed on Keycloak's own pages (the code flow): counted and audited like the
   * form's, and the session it starts. Only Keycloak vouches for it (no local basis).
   */
  completeSso (tokens: TokenSet, ip: string | null): Omit<NewSession, 'ip' | 'userAgent'> {
    const session = this.#keycloakSession(tokens, false)
    this.#deps.logins.inc({ mode: 'keycloak', result: 'success' })
    this.#audit(session.username, ip, 'login', 'success', 'keycloak', 'sso')
    return session
  }

  /** A code flow that Keycloak answered but that could not be completed. */
  ssoFailed (ip: string | null): void {
    this.#audit('', ip, 'login', 'failure', 'keycloak', 'code_exchange_failed')
  }

  /**
   * Seconds until a lockout of this user or address ends, or null when neither is locked:
   * `max_failed_attempts` failures within `window_minutes` lock for `lockout_minutes` after
   * the last of them.
   */
  async lockedFor (username: string, ip: string | null): Promise<number | null> {
    const { security } = this.#deps.config
    const now = this.#deps.clock.now()
    const since = now - Math.max(security.window_minutes, security.lockout_minutes) * 60_000
    return lockoutLeft(await this.#deps.attempts.failures(username, ip, since), lockoutPolicy(security), now)
  }

  // local: the local password decides; Keycloak is asked for tokens best-effort.
  async #localPrimary (username: string, password: string): Promise<LoginOutcome> {
    const user = this.#deps.users.find(username)
    const local = user?.source === 'local' ? user : null
    if (!await this.#verifyLocal(local, password)) return badCredentials()
    const checked = local as UserRecord
    if (!checked.enabled) return { ok: false, reason: 'disabled', status: 403, message: 'This account is disabled.' }
    const tokens = await this.#tryPasswordGrant(checked.username, password)
    if (tokens !== null) return { ok: true, session: this.#keycloakSession(tokens, true, checked.username) }
    return this.#localSession(checked, 'local')
  }

  // keycloak: Keycloak decides while reachable; its last accepted password is cached for
  // outages. A local (break-glass) user of that name is checked when Keycloak refuses or is away.
  // Every way to fail runs exactly one scrypt check (a real hash or the dummy one), so how
  // long a wrong password takes does not tell whether a local user of that name exists.
  async #keycloakPrimary (username: string, password: string): Promise<LoginOutcome> {
    const { pool, oidc, users, log } = this.#deps
    const user = users.find(username)
    let misconfigured = false
    if (pool.reachable()) {
      try {
        const tokens = await oidc.passwordGrant(username, password)
        const identity = storedIdentityOf(tokens, this.#deps.claims)
        // Only a verified address is kept: a cached credential's e-mail counts as verified
        // offline (localIdentityOf), so policies' emails rules decide as they did online.
        await this.cacheCredential(username, password, { keycloakId: subjectOf(tokens), email: identity.emailVerified === true ? identity.email : null, roles: identity.roles, groups: identity.groups })
        return { ok: true, session: this.#keycloakSession(tokens, false, username) }
      } catch (err) {
        if (err instanceof KeycloakRejected && err.oauthError === 'invalid_grant') {
          const local = user?.source === 'local' ? user : null
          if (await this.#verifyLocal(local, password)) return this.#localSession(local as UserRecord, 'local')
          return badCredentials()
        }
        // Unreachable after all, refusing the grant itself (direct grants off), or refusing
        // our own client credentials (logged at error by the OIDC client): the cached
        // credential is the fallback, as when the circuit is open.
        misconfigured = clientAuthRefused(err)
        if (!misconfigured) log.warn({ reason: (err as Error).message, user: username }, err instanceof KeycloakUnavailable ? 'password grant failed: keycloak unreachable' : 'password grant refused; trying cached credentials')
      }
    }
    const outcome = await this.#withoutKeycloak(user, password)
    // One answer for every failure while Keycloak refuses us, so it tells nothing about which
    // local or cached accounts exist; the attempt still counts toward the lockout.
    return misconfigured && !outcome.ok && outcome.reason !== 'locked' ? ssoMisconfigured() : outcome
  }

  // keycloak-primary when Keycloak cannot decide: a cached credential, or a local user.
  async #withoutKeycloak (user: UserRecord | null, password: string): Promise<LoginOutcome> {
    const { config, clock } = this.#deps
    if (user?.source === 'keycloak') {
      if (!config.keycloak.resilience.allow_offline_mode) {
        await this.#verifyLocal(null, password)
        return { ok: false, reason: 'unavailable', status: 503, message: 'Sign-in is unavailable while single sign-on is down. Try again later.' }
      }
      const fresh = user.credentialExpiresAt !== null && user.credentialExpiresAt > clock.now()
      if (!await this.#verifyLocal(fresh ? user : null, password)) return badCredentials()
      return this.#localSession(user, 'cached')
    }
    if (!await this.#verifyLocal(user, password)) return badCredentials()
    return this.#localSession(user as UserRecord, 'local')
  }

  async #verifyLocal (user: UserRecord | null, password: string): Promise<boolean> {
    const hash = user?.passwordHash ?? null
    if (hash === null) {
      await verifyPassword(password, DUMMY_HASH)
      return false
    }
    const ok = await verifyPassword(password, hash)
    if (ok && user?.source === 'local' && needsRehash(hash)) this.#deps.users.setPassword(user.username, await hashPassword(password), this.#deps.clock.now())
    return ok
  }

  async #tryPasswordGrant (username: string, password: string): Promise<TokenSet | null> {
    if (!this.#deps.pool.reachable()) return null
    try {
      return await this.#deps.oidc.passwordGrant(username, password)
    } catch (err) {
      // Keycloak refusing a password the local table accepts means the two disagree: the
      // sync queue's password push settles it; the person logs in locally meanwhile.
      this.#deps.log.warn({ reason: (err as Error).message, user: username }, 'keycloak tokens unavailable for a local login')
      return null
    }
  }

  /**
   * Keeps (or replaces) the cached credential of a Keycloak user: a hash of a password Keycloak
   * accepted, with who the user is, for `local_auth.cached_credentials_days` (0: never kept).
   */
  async cacheCredential (username: string, password: string, who: { keycloakId: string | null, email: string | null, roles: readonly string[], groups: readonly string[] }): Promise<void> {
    const { config, users, clock } = this.#deps
    const days = config.local_auth.cached_credentials_days
    if (days === 0) return
    const passwordHash = await hashPassword(password)
    const now = clock.now()
    users.cacheCredential({ username, passwordHash, keycloakId: who.keycloakId, email: who.email, roles: [...who.roles], groups: [...who.groups], expiresAt: now + days * 86_400_000 }, now)
  }

  // The user name is the one typed on the form, or (code flow) Keycloak's preferred_username.
  #keycloakSession (tokens: TokenSet, localBasis: boolean, username?: string): Omit<NewSession, 'ip' | 'userAgent'> {
    const identity = storedIdentityOf(tokens, this.#deps.claims)
    const subject = subjectOf(tokens)
    return { username: username ?? identity.preferredUsername ?? identity.email ?? subject ?? identity.user, subject, mode: 'keycloak', identity, tokens, localBasis }
  }

  #localSession (user: UserRecord, mode: Exclude<SessionMode, 'keycloak'>): LoginOutcome {
    if (!user.enabled) return { ok: false, reason: 'disabled', status: 403, message: 'This account is disabled.' }
    if (!localLoginAllowed(this.#deps.config.local_auth.allow, user.roles)) {
      return { ok: false, reason: 'local_not_allowed', status: 403, message: 'Single sign-on is unavailable, and your account may not sign in without it. Try again when it is back.' }
    }
    return { ok: true, session: { username: user.username, subject: user.keycloakId, mode, identity: localIdentityOf(user), tokens: null, localBasis: true } }
  }

  async #record (attemptId: string, username: string, ip: string | null, outcome: LoginOutcome): Promise<void> {
    const { config, logins } = this.#deps
    // No password was judged when nothing could vouch for one (Keycloak away, offline mode off).
    await this.settle(attemptId, outcome.ok ? 'success' : outcome.reason === 'unavailable' ? 'void' : 'failure')
    if (outcome.ok) {
      logins.inc({ mode: outcome.session.mode, result: 'success' })
      this.#audit(username, ip, 'login', 'success', outcome.session.mode, null)
      return
    }
    logins.inc({ mode: 'none', result: outcome.reason })
    this.#audit(username, ip, 'login', 'failure', null, outcome.reason)
    if (outcome.reason === 'bad_credentials' && await this.lockedFor(username, ip) !== null) {
      this.#audit(username, ip, 'lockout', 'success', null, `${config.security.max_failed_attempts} failed attempts`)
    }
  }

  #audit (actor: string, ip: string | null, action: 'login' | 'lockout', result: 'success' | 'failure', authMode: string | null, reason: string | null): void {
    this.#deps.audit.append({ actor: actor === '' ? null : actor.slice(0, 128), action, result, authMode, reason, ip }, this.#deps.clock.now())
  }
}

/** The lockout rule of `security`: `max_failed_attempts` failures lock for `lockout_minutes` after the latest. */
export function lockoutPolicy (security: Config['security']): LockoutPolicy {
  return { maxFailures: security.max_failed_attempts, lockoutMs: security.lockout_minutes * 60_000 }
}

/**
 * The identity a local or cached-credential login stands for: the roles and groups stored for
 * the user (for a Keycloak user, those of their last online login), so policies decide offline
 * exactly as online. The e-mail counts as verified: an operator set a local user's, and a
 * cached credential keeps only an address Keycloak had verified. `policy check --user` reads
 * users through this too.
 */
export function localIdentityOf (user: UserRecord): StoredIdentity {
  return {
    // Keycloak users keep their `sub`, so the app sees the same user in every mode.
    user: user.source === 'keycloak' && user.keycloakId !== null ? user.keycloakId : user.username,
    preferredUsername: user.username,
    email: user.email,
    emailVerified: user.email !== null,
    groups: user.groups,
    roles: user.roles
  }
}

/** The message people see while Keycloak refuses Gatehouse's own client credentials. */
export const SSO_MISCONFIGURED = 'Single sign-on is misconfigured: Keycloak refuses this site\'s credentials. Tell the people who run this site; signing in with a Keycloak account is unavailable until they fix it.'

function ssoMisconfigured (): LoginOutcome {
  return { ok: false, reason: 'sso_misconfigured', status: 502, message: SSO_MISCONFIGURED }
}

function badCredentials (): LoginOutcome {
  return { ok: false, reason: 'bad_credentials', status: 401, message: BAD_CREDENTIALS }
}
