import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../config/schema.ts'
import { messagePage, resetPasswordPage, resetRequestPage, type Page } from '../session/pages.ts'
import { RESET_INVALID, RESET_REQUESTED, type PasswordResetService } from '../session/password-reset.ts'

/** The page helpers of the sidecar routes (session/routes.ts): the same CSP, the same CSRF cookie. */
export interface PageHelpers {
  send: (reply: FastifyReply, status: number, page: Page) => FastifyReply
  csrfToken: (request: FastifyRequest, reply: FastifyReply) => string
  csrfValid: (request: FastifyRequest) => boolean
  forbidden: (reply: FastifyReply, request: FastifyRequest) => FastifyReply
}

type Form = Record<string, string | undefined>

/**
 * `GET/POST {prefix}/password-reset` (ask for a link) and `GET/POST {prefix}/password-reset/confirm`
 * (the link's form: a new password), registered only with `password_reset.enabled`. Forms carry
 * the CSRF token; the GET of a link shows the form and consumes nothing (mail scanners and link
 * previews fetch links); links are built from `server.public_url` only.
 */
export async function passwordResetRoutes (fastify: FastifyInstance, deps: { config: Config, resets: PasswordResetService, pages: PageHelpers }): Promise<void> {
  const { config, resets, pages } = deps
  const prefix = config.server.prefix
  const action = `${prefix}/password-reset`
  const confirmAction = `${prefix}/password-reset/confirm`
  const minLength = config.local_auth.password_policy.min_length
  const again = { href: action, text: 'Ask for a new link' }

  fastify.get(action, async (request, reply) => pages.send(reply, 200, resetRequestPage({ action, csrf: pages.csrfToken(request, reply) })))

  fastify.post(action, async (request, reply) => {
    if (!pages.csrfValid(request)) return pages.forbidden(reply, request)
    const identifier = ((request.body ?? {}) as Form).identifier ?? ''
    const outcome = resets.request(identifier, request.ip, config.server.public_url as string)
    if (!outcome.ok) {
      void reply.header('retry-after', String(outcome.retryAfterSeconds))
      return pages.send(reply, 429, resetRequestPage({ action, csrf: pages.csrfToken(request, reply), error: 'Too many reset requests. Try again later.' }))
    }
    return pages.send(reply, 200, messagePage('Check your e-mail', RESET_REQUESTED, { href: `${prefix}/login?form=1`, text: 'Back to sign in' }))
  })

  fastify.get(confirmAction, async (request, reply) => {
    const token = (request.query as Form).token ?? ''
    if (!resets.usable(token)) return pages.send(reply, 400, messagePage('Link not valid', RESET_INVALID, again))
    return pages.send(reply, 200, resetPasswordPage({ action: confirmAction, csrf: pages.csrfToken(request, reply), token, minLength }))
  })

  fastify.post(confirmAction, async (request, reply) => {
    if (!pages.csrfValid(request)) return pages.forbidden(reply, request)
    const form = (request.body ?? {}) as Form
    const token = form.token ?? ''
    const outcome = await resets.reset(token, form.new ?? '', form.confirm ?? '', request.ip)
    if (outcome.ok) {
      return pages.send(reply, 200, messagePage('Password set', `Your new password is set${outcome.queued ? ' (single sign-on takes it as soon as it is reachable)' : ''}, and every session of your account has ended. Sign in with it.`, { href: `${prefix}/login?form=1`, text: 'Sign in' }))
    }
    if (outcome.reason === 'invalid_token') return pages.send(reply, 400, messagePage('Link not valid', RESET_INVALID, again))
    return pages.send(reply, 400, resetPasswordPage({ action: confirmAction, csrf: pages.csrfToken(request, reply), token, minLength, error: outcome.message }))
  })
}
