import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../config/schema.ts'
import type { Decide } from '../decision/decide.ts'
import type { SpoofableHeaders } from '../decision/identity-headers.ts'
import { ignoreBodies } from '../routes/gateway-request.ts'
import { envoyAnswer } from './envoy.ts'

/** What the Envoy HTTP service needs. */
export interface ExtAuthzHttpDeps {
  config: Config
  decide: Decide
  spoofable: SpoofableHeaders
}

// Envoy sends no body unless `with_request_body` asks (then at most its max_request_bytes).
const BODY_LIMIT = 1024 * 1024

/**
 * Envoy's ext_authz HTTP service at `{prefix}/ext-authz/*`, every method (protocol-facts §A):
 * Envoy calls it with the original method, `path_prefix` + the original path and query, and
 * the original Host; `x-forwarded-proto` gives the scheme. Only a 200 lets the request
 * through (Envoy reads 202 as a deny), with the identity headers for
 * `allowed_upstream_headers` and `x-envoy-auth-headers-to-remove` naming every spoofable
 * header Gatehouse did not set. A deny is the decision's status (401 with WWW-Authenticate,
 * 403, 400), or a 302 to the login page for browser page loads (`ext_authz.redirect_browsers`);
 * Envoy passes it to the client as it is. Register it as an encapsulated plugin: it drops
 * request bodies unread.
 */
export async function extAuthzHttpRoutes (scope: FastifyInstance, deps: ExtAuthzHttpDeps): Promise<void> {
  const mount = `${deps.config.server.prefix}/ext-authz`
  const redirectBrowsers = deps.config.ext_authz.redirect_browsers
  ignoreBodies(scope, BODY_LIMIT)
  const check = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const rest = request.url.slice(mount.length)
    const target = rest.startsWith('/') ? rest : `/${rest}`
    const proto = request.headers['x-forwarded-proto']
    const decision = await deps.decide({
      entry: 'ext_authz_http',
      method: request.method,
      target,
      headers: request.headers,
      ip: request.ip,
      scheme: typeof proto === 'string' ? proto.split(',')[0]?.trim() : request.protocol,
      redirectBrowsers
    })
    request.decision = decision
    const answer = envoyAnswer(decision, Object.keys(request.headers), deps.spoofable, request.headers.authorization)
    if (answer.allow) {
      void reply.code(200).headers(answer.headers).header('cache-control', 'no-store')
      if (answer.remove.length > 0) void reply.header('x-envoy-auth-headers-to-remove', answer.remove.join(', '))
      return reply.send()
    }
    return reply.code(answer.status).headers(answer.headers).send(answer.body)
  }
  scope.all(mount, check)
  scope.all(`${mount}/*`, check)
}
