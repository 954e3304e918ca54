import { compile } from '@fastify/proxy-addr'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../config/schema.ts'
import type { Decide, Decision, RequestFacts } from '../decision/decide.ts'
import { safeReturnPath } from '../session/return-to.ts'
import { ignoreBodies } from './gateway-request.ts'

/** What the forward-auth routes need. */
export interface ForwardAuthDeps {
  config: Config
  decide: Decide
}

// nginx's auth subrequest carries the client's body unless `proxy_pass_request_body off`.
const BODY_LIMIT = 1024 * 1024

/** The request a gateway asks about, and whose conventions it follows. */
interface Described {
  flavour: 'nginx' | 'traefik' | 'self'
  method: string
  target: string
  scheme: string
  /** The host the request was for (rules with `hosts`): X-Forwarded-Host from a trusted gateway, else Host. */
  host: string | undefined
}

/**
 * nginx `auth_request` and Traefik ForwardAuth at `{prefix}/auth` (protocol-facts §E), and
 * `{prefix}/start` for nginx's browser flow. The request decided on is the one the gateway
 * describes: `X-Original-URI`/`X-Original-Method` (nginx's convention) or
 * `X-Forwarded-Uri`/`-Method`/`-Proto`/`-Host` (what Traefik sends), believed only from
 * `forward_auth.trusted_proxies`; from any other peer they are ignored and the check
 * request's own line is decided on, so nobody can describe a request they are not making.
 *
 * Answers are 200 with the identity headers, 401 (with WWW-Authenticate) or 403, which every
 * gateway understands (nginx turns anything else into a 500): a path Gatehouse refuses as
 * unsafe is a 403 here. A browser page load without credentials gets a 302 to the login page
 * from Traefik's kind of request, which Traefik passes to the client; nginx gets the 401 and
 * sends the browser to `{prefix}/start` itself (`error_page 401`), as with oauth2-proxy.
 * Register it as an encapsulated plugin: it drops request bodies unread.
 */
export async function forwardAuthRoutes (scope: FastifyInstance, deps: ForwardAuthDeps): Promise<void> {
  const { config, decide } = deps
  const prefix = config.server.prefix
  const trusted = compile(config.forward_auth.trusted_proxies)
  ignoreBodies(scope, BODY_LIMIT)

  const describe = (request: FastifyRequest): Described => {
    const h = request.headers
    const own = { method: request.method, target: request.url, scheme: request.protocol, host: single(h.host) }
    if (!trusted(request.socket.remoteAddress ?? '', 0)) return { flavour: 'self', ...own }
    const host = single(h['x-forwarded-host']) ?? own.host
    const originalUri = single(h['x-original-uri'])
    if (originalUri !== undefined) {
      return { flavour: 'nginx', method: single(h['x-original-method']) ?? 'GET', target: originalUri, scheme: single(h['x-forwarded-proto']) ?? own.scheme, host }
    }
    const forwardedUri = single(h['x-forwarded-uri'])
    if (forwardedUri !== undefined) {
      return { flavour: 'traefik', method: single(h['x-forwarded-method']) ?? 'GET', target: forwardedUri, scheme: single(h['x-forwarded-proto']) ?? own.scheme, host }
    }
    return { flavour: 'self', ...own }
  }

  scope.get(`${prefix}/auth`, async (request, reply) => {
    const described = describe(request)
    const facts: RequestFacts = {
      entry: 'forward_auth',
      method: described.method.toUpperCase(),
      target: described.target,
      headers: request.headers,
      ip: request.ip,
      scheme: described.scheme,
      ...(described.host !== undefined ? { host: described.host } : {}),
      redirectBrowsers: described.flavour === 'traefik'
    }
    const decision = await decide(facts)
    request.decision = decision
    return answer(reply, decision)
  })

  // For nginx: `error_page 401 = @login` sends the browser here, then to the login page and back.
  // The return path is `rd`, or else the X-Original-URI a trusted nginx sends: nginx cannot
  // percent-encode `$request_uri` into a query parameter (`?rd=/a?b=1&c=2` would lose `&c=2`),
  // as oauth2-proxy's X-Auth-Request-Redirect works around the same limit.
  scope.get(`${prefix}/start`, async (request, reply) => {
    const given = (request.query as Record<string, unknown>).rd
    const described = given === undefined ? describe(request) : null
    const rd = safeReturnPath(described?.flavour === 'nginx' ? described.target : given)
    return reply.header('cache-control', 'no-store').redirect(`${prefix}/login?rd=${encodeURIComponent(rd)}`, 302)
  })
}

function answer (reply: FastifyReply, decision: Decision): FastifyReply {
  void reply.header('cache-control', 'no-store')
  if (decision.kind === 'allow') return reply.code(200).headers(decision.headers).send()
  if (decision.kind === 'redirect') return reply.redirect(decision.location, 302)
  // 400 (an unsafe path) becomes 403: auth_request passes only 401 and 403 on.
  if (decision.status === 400 || decision.status === 404) {
    return reply.code(403).type('application/json; charset=utf-8').send({ ...decision.body, error: 'forbidden' })
  }
  return reply.code(decision.status).headers(decision.headers).type('application/json; charset=utf-8').send(decision.body)
}

function single (value: string | string[] | undefined): string | undefined {
  const first = Array.isArray(value) ? value[0] : value
  return first === undefined || first === '' ? undefined : first
}
