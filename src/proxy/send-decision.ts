import type { FastifyReply } from 'fastify'
import type { Decision } from '../decision/decide.ts'

/** Answers a deny or redirect decision. Bodies are generic: a reason code, never internals. */
export function sendDecision (reply: FastifyReply, decision: Exclude<Decision, { kind: 'allow' }>): FastifyReply {
  void reply.header('cache-control', 'no-store')
  if (decision.kind === 'redirect') {
    return reply.redirect(decision.location, 302)
  }
  return reply.code(decision.status).headers(decision.headers).type('application/json; charset=utf-8').send(decision.body)
}
