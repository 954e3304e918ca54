import { createHash, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { MailMessage } from '../notify/mailer.ts'
import type { AuditLogRepository } from '../store/audit-log.ts'
import type { PasswordResetRepository } from '../store/password-resets.ts'
import type { SyncQueueRepository } from '../store/sync-queue.ts'
import type { UsersRepository } from '../store/users.ts'
import { hashPassword, passwordProblem } from './passwords.ts'

/** Where reset e-mails go out: after the answer, on the same path whether or not there is one. */
export interface ResetOutbox {
  /**
   * Called exactly once per admitted request, with the message or with null when there is no
   * one to write to; returns at once (sending happens after the answer), so the answer's time
   * does not depend on the SMTP server, nor on whether a message was sent.
   */
  deliver: (message: MailMessage | null) => void
}

/** What a reset request got. */
export type ResetRequestOutcome = { ok: true } | { ok: false, status: 429, retryAfterSeconds: number }

/** What a reset attempt got. */
export type ResetOutcome =
  | { ok: true, username: string, queued: boolean }
  | { ok: false, status: 400, reason: 'invalid_token' | 'mismatch' | 'policy', message: string }

/** What {@link PasswordResetService} needs. */
export interface PasswordResetDeps {
  config: Config
  resets: PasswordResetRepository
  users: UsersRepository
  audit: AuditLogRepository
  queue: SyncQueueRepository
  /** Called after a password was queued for Keycloak. */
  queued: () => void
  /** Ends every live session of the user; resolves to how many. */
  endSessions: (username: string) => Promise<number> | number
  outbox: ResetOutbox
  clock: Clock
  log: Logger
  metrics: { inc: (labels: { result: string }) => void }
}

/** The message every reset request is answered with, whoever was named. */
export const RESET_REQUESTED = 'If an account with that user name or e-mail address can reset its password here, a link to do so is on its way to the address on file. It works once.'
/** The message for a link that is not (or no longer) usable: unknown, used or expired alike. */
export const RESET_INVALID = 'This reset link has expired or was already used. Ask for a new one.'

/** SHA-256 of a reset token: what is stored and looked up (DESIGN §3). */
export function hashResetToken (token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/**
 * Password reset by e-mail (`password_reset`): for local users only (auth.primary local, or
 * local break-glass users of a keycloak-primary deployment; Keycloak's own users reset at
 * Keycloak). A request is answered the same whether or not the name belongs to such a user,
 * and does the same work: the rate limit, a fresh token and its hash, the same two SQL
 * statements, one audit row and one call to the outbox (with a message or with null). The
 * token is 256 random bits, stored as its SHA-256 with an expiry, and works once; using it
 * sets the local hash, ends the user's sessions, and with auth.primary local queues the new
 * password for Keycloak. Neither the token nor the link is ever logged.
 */
export class PasswordResetService {
  readonly #d: PasswordResetDeps

  constructor (deps: PasswordResetDeps) {
    this.#d = deps
  }

  /** A reset request for `identifier` (a user name or an e-mail address) from `ip`. */
  request (identifier: string, ip: string | null, publicUrl: string): ResetRequestOutcome {
    const { config, resets, clock, audit } = this.#d
    const settings = config.password_reset
    const now = clock.now()
    const windowMs = settings.window_minutes * 60_000
    const id = identifier.trim().slice(0, 256).toLowerCase()
    const admitted = resets.admit(id, ip, now, now - windowMs, { perIdentifier: settings.max_requests_per_user, perIp: settings.max_requests_per_ip })
    if (admitted === null) {
      this.#d.metrics.inc({ result: 'rate_limited' })
      const retry = Math.max(1, Math.ceil((resets.nextAdmission(id, ip, now - windowMs, windowMs) - now) / 1000))
      return { ok: false, status: 429, retryAfterSeconds: retry }
    }
    const token = randomBytes(32).toString('base64url')
    const expiresAt = now + settings.token_ttl_minutes * 60_000
    const target = resets.issue(id, hashResetToken(token), now, expiresAt, { since: now - windowMs, max: settings.max_requests_per_user })
    audit.append({ actor: target?.username ?? null, action: 'password_reset_requested', result: target === null ? 'failure' : 'success', reason: target === null ? 'no_local_user_with_email' : null, ip }, now)
    this.#d.outbox.deliver(target === null ? null : {
      to: [target.email],
      subject: settings.subject,
      text: resetMailText({ username: target.username, link: `${publicUrl.replace(/\/+$/, '')}${config.server.prefix}/password-reset/confirm?token=${token}`, minutes: settings.token_ttl_minutes, ip, at: now, site: new URL(publicUrl).host })
    })
    this.#d.metrics.inc({ result: 'requested' })
    return { ok: true }
  }

  /** Whether a token is usable now (the form is shown); nothing is consumed. */
  usable (token: string): boolean {
    const found = token === '' ? null : this.#d.resets.find(hashResetToken(token))
    return found !== null && found.usedAt === null && found.expiresAt > this.#d.clock.now()
  }

  /** Sets a new password with a token, once. The token is consumed only when the password is set. */
  async reset (token: string, next: string, confirm: string, ip: string | null): Promise<ResetOutcome> {
    const { config, resets, users, clock, audit } = this.#d
    const invalid = (): ResetOutcome => {
      this.#d.metrics.inc({ result: 'invalid_token' })
      return { ok: false, status: 400, reason: 'invalid_token', message: RESET_INVALID }
    }
    const hash = hashResetToken(token)
    const found = token === '' ? null : resets.find(hash)
    if (found === null || found.usedAt !== null || found.expiresAt <= clock.now()) return invalid()
    const user = users.find(found.username)
    if (user === null || user.source !== 'local' || !user.enabled) return invalid()
    if (next !== confirm) return { ok: false, status: 400, reason: 'mismatch', message: 'The new passwords do not match.' }
    const problem = passwordProblem(next, user.username, config.local_auth.password_policy)
    if (problem !== null) {
      this.#d.metrics.inc({ result: 'rejected' })
      return { ok: false, status: 400, reason: 'policy', message: problem }
    }
    const passwordHash = await hashPassword(next)
    const now = clock.now()
    // Consumed and changed in one transaction: of two uses racing, exactly one sets a password.
    const username = resets.consume(hash, now, (name) => { users.setPassword(name, passwordHash, now) })
    if (username === null) return invalid()
    const queued = config.auth.primary === 'local' && config.feature_flags.keycloak_enabled && config.keycloak.kind === 'keycloak'
    if (queued) {
      this.#d.queue.enqueue({ username, operation: 'password_change', payload: { keycloak_id: user.keycloakId }, secret: { password: next } }, now)
      this.#d.queued()
    }
    // Whoever held a session on the old password (the reason for a reset, often) is out.
    const ended = await this.#d.endSessions(username)
    audit.append({ actor: username, action: 'password_reset', result: 'success', authMode: 'local', ip, detail: { keycloak: queued ? 'queued' : 'not_applicable', sessions_ended: ended } }, now)
    this.#d.metrics.inc({ result: 'completed' })
    this.#d.log.info({ user: username, sessions: ended, keycloak: queued ? 'queued' : 'not_applicable' }, 'password reset by e-mail link')
    return { ok: true, username, queued }
  }
}

/** The reset e-mail's body (plain text). */
export function resetMailText (m: { username: string, link: string, minutes: number, ip: string | null, at: number, site: string }): string {
  return [
    'Hello,',
    '',
    `someone asked to reset the password of the account ${m.username} at ${m.site}.`,
    `To choose a new password, open this link within ${m.minutes} minutes. It works once:`,
    '',
    m.link,
    '',
    'If you did not ask for this, ignore this message: your password stays as it is.',
    `The request came from ${m.ip ?? 'an unknown address'} at ${new Date(m.at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}.`
  ].join('\n')
}

/**
 * The outbox of a running Gatehouse: each message goes out after the answer (on the next turn
 * of the event loop), through the mailer; a null is scheduled the same way and sends nothing.
 * A failure is logged without the message (its body holds the link) and counted.
 */
export function mailerOutbox (send: ((message: MailMessage) => Promise<void>) | null, log: Logger, metrics: { inc: (labels: { result: string }) => void }): ResetOutbox {
  return {
    deliver: (message) => {
      setImmediate(() => {
        if (message === null || send === null) return
        send(message).then(
          () => { metrics.inc({ result: 'email_sent' }) },
          (err: unknown) => {
            metrics.inc({ result: 'email_failed' })
            log.error({ reason: (err as Error).message }, 'password reset e-mail could not be sent')
          }
        )
      })
    }
  }
}
