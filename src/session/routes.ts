import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import * as oidcClient from 'openid-client'
import { stringifySetCookie } from 'cookie'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { KeycloakUnavailable } from '../errors.ts'
import type { Identity } from '../identity.ts'
import type { KeycloakPool } from '../keycloak/failover.ts'
import type { JwksManager } from '../keycloak/jwks.ts'
import { clientAuthRefused, type OidcClient } from '../keycloak/oidc.ts'
import type { AuditLogRepository } from '../store/audit-log.ts'
import type { KeyRing } from '../store/crypto.ts'
import type { SyncQueueRepository } from '../store/sync-queue.ts'
import { cookieNames, cookiesSecure, type CookieJar, type CookieNames } from './cookie.ts'
import { csrfMatches, newCsrfToken } from './csrf.ts'
import { SSO_MISCONFIGURED, type LoginService } from './login.ts'
import { LogoutReplayCache, verifyLogoutToken } from './logout-token.ts'
import { loginPage, logoutPage, messagePage, passwordPage, type Page } from './pages.ts'
import type { PasswordChanger } from './password-change.ts'
import { safeReturnPath } from './return-to.ts'
import type { NewSession, SessionService } from './service.ts'
import type { PasswordResetService } from './password-reset.ts'
import { passwordResetRoutes } from '../routes/password-reset.ts'

/** What the sidecar's own routes need. */
export interface SessionRoutesDeps {
  config: Config
  sessions: SessionService
  login: LoginService
  passwords: PasswordChanger
  oidc: OidcClient
  pool: KeycloakPool
  jwks: JwksManager
  jar: CookieJar
  ring: KeyRing
  audit: AuditLogRepository
  queue: SyncQueueRepository
  /** Called after a write was queued for Keycloak. */
  queued: () => void
  /** Who a request's credentials are (bearer token, else session): decide()'s authentication. */
  identify: (headers: FastifyRequest['headers'], scheme: string) => Promise<Identity | null>
  clock: Clock
  log: Logger
  /** Password reset by e-mail, when `password_reset.enabled`. */
  resets?: PasswordResetService
}

interface LoginTransaction {
  state: string
  nonce: string
  verifier: string
  rd: string
  at: number
}

type Form = Record<string, string | undefined>

const TX_CONTEXT = 'login_tx'
const TX_MAX_AGE_SECONDS = 600
const FORM_BODY_LIMIT = 16 * 1024
const SSO_UNAVAILABLE = 'Single sign-on is unavailable right now. You can sign in here with your password.'
const LOCAL_LOGOUT_ONLY = 'You are signed out of this site. Your single sign-on session at the identity provider may still be open: it offers no single sign-out from here, so close the browser or sign out there too.'

/**
 * Gatehouse's routes under `server.prefix` (DESIGN §3): login (OIDC code flow with PKCE, or
 * the local form), callback, logout (RP-initiated, or queued), back-channel logout, userinfo
 * and password change. Forms carry CSRF tokens; return URLs are same-origin paths only; the
 * pages carry a strict CSP.
 */
export async function sessionRoutes (fastify: FastifyInstance, deps: SessionRoutesDeps): Promise<void> {
  const { config, sessions, jar, log } = deps
  const prefix = config.server.prefix
  const issuerOrigin = new URL(config.keycloak.issuer).origin

  fastify.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_BODY_LIMIT }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)))
  })

  const secure = (request: FastifyRequest): boolean => cookiesSecure(config.session.cookie_secure, config.server.public_url, request.protocol)
  const names = (request: FastifyRequest): CookieNames => cookieNames(config.session.cookie_name, secure(request))
  const publicBase = (request: FastifyRequest): string => (config.server.public_url ?? `${request.protocol}://${request.host}`).replace(/\/+$/, '')
  const redirectUri = (request: FastifyRequest): string => `${publicBase(request)}${prefix}/callback`
  const ssoAvailable = (): boolean => config.feature_flags.keycloak_enabled && deps.pool.reachable()

  function setCookie (request: FastifyRequest, reply: FastifyReply, name: string, value: string, options: { maxAge: number, sameSite: 'lax' | 'strict' }): void {
    void reply.header('set-cookie', stringifySetCookie({ name, value, path: '/', httpOnly: true, secure: secure(request), sameSite: options.sameSite, maxAge: options.maxAge }))
  }
  function clearCookie (request: FastifyRequest, reply: FastifyReply, name: string): void {
    void reply.header('set-cookie', stringifySetCookie({ name, value: '', path: '/', httpOnly: true, secure: secure(request), sameSite: 'lax', maxAge: 0 }))
  }

  function send (reply: FastifyReply, status: number, page: Page): FastifyReply {
    return reply.code(status).headers({
      'content-security-policy': `default-src 'none'; style-src 'nonce-${page.nonce}'; form-action 'self' ${issuerOrigin}; frame-ancestors 'none'; base-uri 'none'`,
      'x-frame-options': 'DENY',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store'
    }).type('text/html; charset=utf-8').send(page.html)
  }

  // The CSRF token of this browser, set as a cookie when it has none (double submit).
  function csrfToken (request: FastifyRequest, reply: FastifyReply): string {
    const existing = jar.read(request.headers.cookie, 'csrf', secure(request))
    if (existing !== null) return existing
    const token = newCsrfToken()
    setCookie(request, reply, names(request).csrf, jar.sign(token), { maxAge: config.session.absolute_timeout_hours * 3600, sameSite: 'strict' })
    return token
  }
  function csrfValid (request: FastifyRequest): boolean {
    const submitted = (request.body as Form | undefined)?.csrf ?? request.headers['x-csrf-token']
    return csrfMatches(jar.read(request.headers.cookie, 'csrf', secure(request)), submitted)
  }
  function forbidden (reply: FastifyReply, request: FastifyRequest): FastifyReply {
    log.warn({ reqId: request.id, path: request.routeOptions.url }, 'form refused: missing or wrong CSRF token')
    return send(reply, 403, messagePage('Form expired', 'This form has expired or did not come from this site. Go back, reload the page and try again.'))
  }

  function renderLogin (request: FastifyRequest, reply: FastifyReply, status: number, options: { rd: string, error?: string, username?: string, notice?: string }): FastifyReply {
    const notice = options.notice ?? (deps.oidc.clientAuth.state === 'failed' ? SSO_MISCONFIGURED : ssoAvailable() ? undefined : SSO_UNAVAILABLE)
    return send(reply, status, loginPage({
      action: `${prefix}/login`,
      rd: options.rd,
      csrf: csrfToken(request, reply),
      ...(options.username !== undefined ? { username: options.username } : {}),
      ...(notice !== undefined && notice !== options.error ? { notice } : {}),
      ...(options.error !== undefined ? { error: options.error } : {}),
      ...(deps.resets !== undefined ? { resetHref: `${prefix}/password-reset` } : {})
    }))
  }

  const currentSession = async (request: FastifyRequest): Promise<Awaited<ReturnType<SessionService['peek']>>> => {
    const secret = jar.sessionSecret(request.headers.cookie, secure(request))
    return secret === null ? null : await sessions.peek(secret)
  }

  fastify.get(`${prefix}/login`, async (request, reply) => {
    const query = request.query as Form
    const rd = safeReturnPath(query.rd)
    // `form=1` asks for the password form even while SSO works: the only way a password
    // reaches Gatehouse, and so the only way a cached credential is made (auth.primary keycloak).
    if (!ssoAvailable() || query.form === '1') return renderLogin(request, reply, 200, { rd })
    let start: URL
    const verifier = oidcClient.randomPKCECodeVerifier()
    const tx: LoginTransaction = { state: oidcClient.randomState(), nonce: oidcClient.randomNonce(), verifier, rd, at: deps.clock.now() }
    const sealed = deps.ring.encrypt(JSON.stringify(tx), TX_CONTEXT).toString('base64url')
    // Lax, not Strict: the cookie must come back on the top-level redirect from Keycloak.
    setCookie(request, reply, names(request).login, sealed, { maxAge: TX_MAX_AGE_SECONDS, sameSite: 'lax' })
    try {
      // Reads discovery first when nothing is known yet (a first start): within the pool's deadline.
      start = await deps.oidc.authorizationUrl({ redirectUri: redirectUri(request), state: tx.state, nonce: tx.nonce, codeChallenge: await oidcClient.calculatePKCECodeChallenge(verifier) })
    } catch (err) {
      if (!(err instanceof KeycloakUnavailable)) throw err
      return renderLogin(request, reply, 200, { rd, notice: SSO_UNAVAILABLE })
    }
    return reply.header('cache-control', 'no-store').redirect(start.href, 302)
  })

  fastify.get(`${prefix}/callback`, async (request, reply) => {
    const tx = readTransaction(request)
    clearCookie(request, reply, names(request).login)
    const restart = { href: `${prefix}/login?rd=${encodeURIComponent(tx?.rd ?? '/')}`, text: 'Sign in again' }
    if (tx === null) return send(reply, 400, messagePage('Sign-in expired', 'This sign-in was not started here or took too long.', restart))
    const query = request.query as Form
    if (query.error !== undefined) {
      log.warn({ reqId: request.id, error: query.error.slice(0, 64) }, 'keycloak returned an error to the callback')
      return renderLogin(request, reply, 200, { rd: tx.rd, notice: 'Single sign-on did not complete. You can sign in here with your password.' })
    }
    let tokens
    try {
      tokens = await deps.oidc.exchangeCode(new URL(`${publicBase(request)}${request.url}`), { codeVerifier: tx.verifier, state: tx.state, nonce: tx.nonce }, redirectUri(request))
    } catch (err) {
      if (err instanceof KeycloakUnavailable) return renderLogin(request, reply, 200, { rd: tx.rd, notice: SSO_UNAVAILABLE })
      deps.login.ssoFailed(request.ip)
      // The OIDC client has logged this one at error, once; the person is told what it is.
      if (clientAuthRefused(err)) return send(reply, 502, messagePage('Single sign-on is misconfigured', SSO_MISCONFIGURED, { href: `${prefix}/login?form=1&rd=${encodeURIComponent(tx.rd)}`, text: 'Sign in with a local account' }))
      log.warn({ reqId: request.id, reason: (err as Error).message }, 'code exchange refused')
      return send(reply, 400, messagePage('Sign-in failed', 'Single sign-on could not be completed.', restart))
    }
    await startSession(request, reply, deps.login.completeSso(tokens, request.ip))
    return reply.redirect(tx.rd, 302)
  })

  fastify.post(`${prefix}/login`, async (request, reply) => {
    const form = (request.body ?? {}) as Form
    if (!csrfValid(request)) return forbidden(reply, request)
    const rd = safeReturnPath(form.rd)
    const username = (form.username ?? '').slice(0, 256)
    const outcome = await deps.login.login(username, form.password ?? '', request.ip)
    if (!outcome.ok) {
      if (outcome.retryAfterSeconds !== undefined) void reply.header('retry-after', String(outcome.retryAfterSeconds))
      return renderLogin(request, reply, outcome.status, { rd, username, error: outcome.message })
    }
    await startSession(request, reply, outcome.session)
    return reply.redirect(rd, 303)
  })

  async function startSession (request: FastifyRequest, reply: FastifyReply, input: Omit<NewSession, 'ip' | 'userAgent'>): Promise<void> {
    // A fresh secret on every login: a secret planted before it (session fixation) is dropped.
    const previous = await currentSession(request)
    if (previous !== null) await sessions.end(previous.record.id, 'replaced')
    const { secret } = await sessions.create({ ...input, ip: request.ip, userAgent: request.headers['user-agent'] ?? null })
    setCookie(request, reply, names(request).session, jar.sign(secret), { maxAge: Math.floor(config.session.absolute_timeout_hours * 3600), sameSite: 'lax' })
  }

  function readTransaction (request: FastifyRequest): LoginTransaction | null {
    // Sealed with the key ring (AES-GCM authenticates it), so not signed as well.
    const sealed = jar.raw(request.headers.cookie, 'login', secure(request))
    if (sealed === null) return null
    try {
      const tx = JSON.parse(deps.ring.decryptText(Buffer.from(sealed, 'base64url'), TX_CONTEXT)) as LoginTransaction
      return deps.clock.now() - tx.at <= TX_MAX_AGE_SECONDS * 1000 ? { ...tx, rd: safeReturnPath(tx.rd) } : null
    } catch {
      return null
    }
  }

  fastify.get(`${prefix}/logout`, async (request, reply) => {
    const rd = safeReturnPath((request.query as Form).rd)
    return send(reply, 200, logoutPage({ action: `${prefix}/logout`, rd, csrf: csrfToken(request, reply) }))
  })

  fastify.post(`${prefix}/logout`, async (request, reply) => {
    if (!csrfValid(request)) return forbidden(reply, request)
    const rd = safeReturnPath((request.body as Form | undefined)?.rd)
    const current = await currentSession(request)
    clearCookie(request, reply, names(request).session)
    if (current === null) return reply.redirect(rd, 303)
    const { record, tokens } = current
    await sessions.end(record.id, 'logout')
    deps.audit.append({ actor: record.username, action: 'logout', result: 'success', authMode: record.mode, ip: request.ip }, deps.clock.now())
    const keycloakPart = record.subject !== null && (tokens !== null || record.keycloakSid !== null)
    if (!keycloakPart) return reply.redirect(rd, 303)
    if (ssoAvailable()) {
      const url = await deps.oidc.endSessionUrl({ idTokenHint: tokens?.idToken ?? null, postLogoutRedirectUri: `${publicBase(request)}${rd}`, state: oidcClient.randomState() })
      if (url !== null) return reply.redirect(url.href, 303)
      // No end-session endpoint (RP-Initiated Logout is optional): only this site's session ends.
      return send(reply, 200, messagePage('Signed out', LOCAL_LOGOUT_ONLY, { href: rd, text: 'Continue' }))
    }
    if (config.keycloak.kind !== 'keycloak') return send(reply, 200, messagePage('Signed out', LOCAL_LOGOUT_ONLY, { href: rd, text: 'Continue' }))
    // Keycloak is away: the local session is over now; its Keycloak session ends when it is back.
    deps.queue.enqueue({ username: record.username, operation: 'logout_user', payload: { keycloak_id: record.subject, sid: record.keycloakSid } }, deps.clock.now())
    deps.queued()
    log.info({ user: record.username, session: record.id }, 'keycloak logout queued')
    return reply.redirect(rd, 303)
  })

  const replays = new LogoutReplayCache(deps.clock, config.tokens.clock_skew_seconds)
  fastify.post(`${prefix}/backchannel-logout`, async (request, reply) => {
    void reply.header('cache-control', 'no-store')
    // The logout token comes as a form (Back-Channel Logout 1.0 §2.5); JSON is not accepted.
    if (!(request.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      return reply.code(400).send({ error: 'invalid_request', error_description: 'logout_token must be sent as application/x-www-form-urlencoded' })
    }
    const token = (request.body as Form | undefined)?.logout_token
    if (typeof token !== 'string' || token === '') return reply.code(400).send({ error: 'invalid_request', error_description: 'logout_token is required' })
    let target
    try {
      target = await verifyLogoutToken(token, {
        jwks: deps.jwks,
        issuer: config.keycloak.issuer,
        clientId: config.keycloak.client_id,
        algorithms: config.tokens.algorithms,
        clockSkewSeconds: config.tokens.clock_skew_seconds,
        clock: deps.clock,
        replays
      })
    } catch (err) {
      log.warn({ reqId: request.id, reason: (err as Error).message }, 'back-channel logout token refused')
      return reply.code(400).send({ error: 'invalid_request', error_description: 'invalid logout_token' })
    }
    // By sid; when no session has it, the subject's sessions that recorded no sid (made from
    // tokens without one). Never sessions holding another sid: those are other Keycloak
    // sessions of the person, still live at Keycloak (§2.7).
    let ended = target.sid !== null ? await sessions.endWhere({ keycloakSid: target.sid }, 'backchannel_logout') : []
    const by = ended.length > 0 || target.sub === null ? 'sid' : 'sub'
    if (by === 'sub') ended = await sessions.endWhere({ subject: target.sub as string, sidless: target.sid !== null }, 'backchannel_logout')
    deps.audit.append({ actor: target.sub, action: 'backchannel_logout', result: 'success', reason: by, ip: request.ip, detail: { sessions: ended.length } }, deps.clock.now())
    log.info({ sub: target.sub, sessions: ended.length }, 'back-channel logout')
    return reply.code(200).send()
  })

  fastify.get(`${prefix}/userinfo`, async (request, reply) => {
    void reply.header('cache-control', 'no-store')
    const identity = await deps.identify(request.headers, request.protocol)
    if (identity === null) return reply.code(401).header('www-authenticate', 'Bearer realm="gatehouse"').send({ error: 'unauthorized' })
    return {
      user: identity.user,
      preferred_username: identity.preferredUsername,
      email: identity.email,
      groups: identity.groups,
      roles: identity.roles,
      auth_mode: identity.authMode,
      expires_at: identity.expiresAt === null ? null : new Date(identity.expiresAt).toISOString()
    }
  })

  // The password routes need the session itself (its user and mode), not only an identity.
  const signedIn = async (request: FastifyRequest): Promise<Awaited<ReturnType<SessionService['identify']>>> => {
    const secret = jar.sessionSecret(request.headers.cookie, secure(request))
    return secret === null ? null : await sessions.identify(secret)
  }

  fastify.get(`${prefix}/password`, async (request, reply) => {
    const session = await signedIn(request)
    if (session === null) return reply.redirect(`${prefix}/login?rd=${encodeURIComponent(`${prefix}/password`)}`, 302)
    return send(reply, 200, passwordPage({ action: `${prefix}/password`, csrf: csrfToken(request, reply), minLength: config.local_auth.password_policy.min_length }))
  })

  fastify.post(`${prefix}/password`, async (request, reply) => {
    if (!csrfValid(request)) return forbidden(reply, request)
    const session = await signedIn(request)
    if (session === null) return send(reply, 401, messagePage('Not signed in', 'Sign in before changing your password.', { href: `${prefix}/login?rd=${encodeURIComponent(`${prefix}/password`)}`, text: 'Sign in' }))
    const form = (request.body ?? {}) as Form
    const outcome = await deps.passwords.change(session.session, form.current ?? '', form.new ?? '', form.confirm ?? '', request.ip)
    const base = { action: `${prefix}/password`, csrf: csrfToken(request, reply), minLength: config.local_auth.password_policy.min_length }
    if (!outcome.ok) {
      if (outcome.retryAfterSeconds !== undefined) void reply.header('retry-after', String(outcome.retryAfterSeconds))
      return send(reply, outcome.status, passwordPage({ ...base, error: outcome.message }))
    }
    return send(reply, 200, passwordPage({ ...base, ok: outcome.message }))
  })

  if (deps.resets !== undefined) await passwordResetRoutes(fastify, { config, resets: deps.resets, pages: { send, csrfToken, csrfValid, forbidden } })

  // Anything else under the prefix is ours and unknown: never the app's.
  fastify.all(`${prefix}/*`, async (_request, reply) => reply.code(404).header('cache-control', 'no-store').send({ error: 'not_found' }))
}
