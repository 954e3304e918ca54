import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { KeycloakRejected } from '../errors.ts'
import type { KeycloakPool } from '../keycloak/failover.ts'
import type { OidcClient } from '../keycloak/oidc.ts'
import type { AuditLogRepository } from '../store/audit-log.ts'
import type { SessionRecord } from '../store/sessions.ts'
import type { SyncQueueRepository } from '../store/sync-queue.ts'
import type { UserRecord, UsersRepository } from '../store/users.ts'
import type { LoginService } from './login.ts'
import { hashPassword, passwordProblem, verifyPassword } from './passwords.ts'

/** The outcome of a password change. */
export type PasswordChangeOutcome =
  | { ok: true, message: string }
  | { ok: false, status: 400 | 401 | 429 | 503, message: string, retryAfterSeconds?: number }

/** What {@link PasswordChanger} needs. */
export interface PasswordChangeDeps {
  config: Config
  users: UsersRepository
  audit: AuditLogRepository
  queue: SyncQueueRepository
  pool: KeycloakPool
  oidc: OidcClient
  login: LoginService
  clock: Clock
  log: Logger
  /** Called after a write was queued for Keycloak (the sync worker replays it now if it can). */
  queued: () => void
  /** Ends every other live session of the person (and their cached tokens); returns how many. */
  endOtherSessions: (session: SessionRecord) => Promise<number>
}

const WRONG_CURRENT = 'The current password is not correct.'

/**
 * Password changes from the signed-in person (DESIGN §3, `POST {prefix}/password`). With
 * `auth.primary: local` the local hash changes at once and the new password is queued for
 * Keycloak (encrypted; the sync queue delivers it, at once when Keycloak is up). With
 * `keycloak` Keycloak checks the current password and the change is queued for it; while it
 * is unreachable the change is refused unless `local_auth.queue_password_changes` allows it.
 */
export class PasswordChanger {
  readonly #deps: PasswordChangeDeps

  constructor (deps: PasswordChangeDeps) {
    this.#deps = deps
  }

  /**
   * Changes the signed-in person's password. The current password's check is counted toward
   * the lockout before it runs, as a login's is. On success every other session of the person
   * ends (`session.end_others_on_password_change`, OWASP ASVS 3.3.3): whoever knew the old
   * password is signed out everywhere but here.
   */
  async change (session: SessionRecord, current: string, next: string, confirm: string, ip: string | null): Promise<PasswordChangeOutcome> {
    const { config, login } = this.#deps
    const username = session.username
    if (next !== confirm) return { ok: false, status: 400, message: 'The new passwords do not match.' }
    const problem = passwordProblem(next, username, config.local_auth.password_policy)
    if (problem !== null) return this.#refused(session, ip, 400, problem, 'policy')
    if (config.local_auth.password_policy.not_current && next === current) return this.#refused(session, ip, 400, 'The new password must differ from the current one.', 'policy')
    const reservation = await login.reserve(username, ip)
    if ('lockedForSeconds' in reservation) return { ok: false, status: 429, message: 'Too many failed attempts. Try again later.', retryAfterSeconds: reservation.lockedForSeconds }
    const outcome = await this.#change(session, current, next, ip)
    await login.settle(reservation.id, outcome.ok ? 'success' : outcome.status === 401 ? 'failure' : 'void')
    if (outcome.ok && config.session.end_others_on_password_change) {
      const ended = await this.#deps.endOtherSessions(session)
      if (ended > 0) this.#deps.log.info({ user: username, sessions: ended }, 'password changed: other sessions ended')
    }
    return outcome
  }

  async #change (session: SessionRecord, current: string, next: string, ip: string | null): Promise<PasswordChangeOutcome> {
    const { config, users, login } = this.#deps
    const username = session.username
    const user = users.find(username)
    if (config.auth.primary === 'local' || user?.source === 'local') {
      if (user?.source !== 'local' || user.passwordHash === null || !await verifyPassword(current, user.passwordHash)) return this.#wrongCurrent(session, ip)
      users.setPassword(username, await hashPassword(next), this.#now())
      // Only the owner of passwords pushes them: a break-glass user of a keycloak-primary
      // deployment has no Keycloak account to update.
      const queued = config.auth.primary === 'local' && config.feature_flags.keycloak_enabled && config.keycloak.kind === 'keycloak'
      if (queued) this.#enqueue(user, next)
      return this.#changed(session, ip, queued)
    }

    // A generic provider's passwords are changed at the provider: there is no Admin API to push to.
    if (config.keycloak.kind !== 'keycloak') {
      return this.#refused(session, ip, 400, 'Your password is managed by your identity provider: change it there.', 'not_local')
    }
    // keycloak-primary: Keycloak is the judge of the current password while it answers.
    let verified = false
    if (this.#deps.pool.reachable()) {
      try {
        await this.#deps.oidc.passwordGrant(username, current)
        verified = true
      } catch (err) {
        if (err instanceof KeycloakRejected && err.oauthError === 'invalid_grant') return this.#wrongCurrent(session, ip)
        this.#deps.log.warn({ user: username, reason: (err as Error).message }, 'could not check the current password with keycloak')
      }
    }
    if (!verified) {
      if (!config.local_auth.queue_password_changes) {
        return this.#refused(session, ip, 503, 'Password changes are unavailable while single sign-on is down. Try again later.', 'keycloak_unavailable')
      }
      const fresh = user?.source === 'keycloak' && user.passwordHash !== null && (user.credentialExpiresAt ?? 0) > this.#now()
      if (!fresh || !await verifyPassword(current, (user as UserRecord).passwordHash as string)) return this.#wrongCurrent(session, ip)
    }
    this.#enqueue(user, next, session.subject)
    if (user?.source === 'keycloak') await login.cacheCredential(username, next, user)
    return this.#changed(session, ip, true)
  }

  #enqueue (user: UserRecord | null, password: string, subject: string | null = null): void {
    const username = user?.username
    if (username === undefined) return
    this.#deps.queue.enqueue({
      username,
      operation: 'password_change',
      payload: { keycloak_id: user?.keycloakId ?? subject },
      secret: { password }
    }, this.#now())
    this.#deps.queued()
  }

  #wrongCurrent (session: SessionRecord, ip: string | null): PasswordChangeOutcome {
    return this.#refused(session, ip, 401, WRONG_CURRENT, 'bad_credentials')
  }

  #refused (session: SessionRecord, ip: string | null, status: 400 | 401 | 503, message: string, reason: string): PasswordChangeOutcome {
    this.#deps.audit.append({ actor: session.username, action: 'password_change', result: 'failure', authMode: session.mode, reason, ip }, this.#now())
    return { ok: false, status, message }
  }

  #changed (session: SessionRecord, ip: string | null, queued: boolean): PasswordChangeOutcome {
    this.#deps.audit.append({ actor: session.username, action: 'password_change', result: 'success', authMode: session.mode, ip, detail: { keycloak: queued ? 'queued' : 'not_applicable' } }, this.#now())
    return { ok: true, message: queued ? 'Your password has been changed. Single sign-on takes the new password as soon as it is reachable.' : 'Your password has been changed.' }
  }

  #now (): number {
    return this.#deps.clock.now()
  }
}
