import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import httpProxy from '@fastify/http-proxy'
import type { Config } from '../config/schema.ts'
import type { Decide, Decision } from '../decision/decide.ts'
import type { SpoofableHeaders } from '../decision/identity-headers.ts'
import type { HotPathMetrics } from '../metrics/registry.ts'
import { sendContinue } from './expect.ts'
import { forwardHeaders, forwardWebSocketHeaders, type ForwardOptions } from './forward-headers.ts'
import { ownCookieFilter } from './own-cookies.ts'
import { sendDecision } from './send-decision.ts'
import { ignoreNonWebSocketUpgrades } from './upgrade.ts'
import { classifyForwardError } from './upstream-error.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The decision made for this request, once made. */
    decision: Decision | null
  }
}

/** Options of {@link proxyPlugin}. */
export interface ProxyPluginOptions {
  config: Config
  decide: Decide
  /** What is stripped from the client's headers before the app gets them. */
  spoofable: SpoofableHeaders
  /** Where upstream failures are counted. */
  metrics: Pick<HotPathMetrics, 'recordUpstreamError'>
}

// Methods proxied; WebDAV and the like can be added when an app needs them.
const METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']

/**
 * Everything not under the sidecar prefix goes to the app, after the decision: a deny or
 * redirect is answered here and the app never sees the request; an allow is forwarded over
 * a keep-alive pool with the normalised path, bodies streamed, identity headers replaced.
 * WebSocket upgrades are routed through the same hook, so they get the same decision.
 * Hop-by-hop headers and Gatehouse's own cookies never reach the app (forward-headers.ts).
 */
export async function proxyPlugin (fastify: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  const { config, decide, metrics } = options
  const forwardOptions: ForwardOptions = {
    isSpoofable: options.spoofable.test,
    trustForwarded: config.server.trust_proxy !== false,
    passHostHeader: config.upstream.pass_host_header,
    withoutOwnCookies: ownCookieFilter(config.session.cookie_name)
  }
  const NO_IDENTITY: Readonly<Record<string, string>> = Object.freeze({})
  const identityOf = (request: FastifyRequest): Readonly<Record<string, string>> => request.decision?.kind === 'allow' ? request.decision.headers : NO_IDENTITY

  async function gate (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const decision = await decide({ entry: 'proxy', method: request.method, target: request.url, headers: request.headers, ip: request.ip, scheme: request.protocol })
    request.decision = decision
    // A refused request is answered without the 100, so its body is never sent (expect.ts).
    if (decision.kind !== 'allow') return sendDecision(reply, decision)
    // The app receives the path the decision was made on, never another spelling of it.
    request.raw.url = decision.target
    if (request.headers.expect !== undefined) sendContinue(reply.raw)
    return undefined
  }

  // The plugin's types describe callback-style hooks and a literal `websocket: true`; the
  // options below are the documented ones, with an async hook Fastify itself supports.
  const plugin = httpProxy as unknown as FastifyPluginAsync<Record<string, unknown>>
  // The plugin passes JSON and every other type through as a stream, but Fastify's own
  // text/plain parser would still read such a body whole before the decision (and refuse one
  // over the 1 MiB body limit with a 413): every body is the app's, streamed after the allow.
  // Removed here, before the plugin's own (encapsulated) context copies this one's parsers.
  fastify.removeContentTypeParser('text/plain')
  await fastify.register(plugin, {
    upstream: config.upstream.url,
    prefix: '/',
    httpMethods: METHODS,
    websocket: config.upstream.websocket,
    wsHooks: {},
    preHandler: gate,
    disableRequestLogging: true,
    undici: {
      connections: config.upstream.connections,
      pipelining: 1,
      keepAliveTimeout: config.upstream.keep_alive_ms,
      headersTimeout: config.upstream.timeout_ms,
      bodyTimeout: config.upstream.timeout_ms
    },
    replyOptions: {
      rewriteRequestHeaders: (request: FastifyRequest, headers: IncomingHttpHeaders) => forwardHeaders(request, headers, forwardOptions, identityOf(request)),
      // reply-from retries idempotent requests on 503 by default: an auth proxy must not multiply load on a struggling app.
      retryDelay: () => null,
      onError: (reply: FastifyReply, { error }: { error: Error }) => {
        const failure = classifyForwardError(error)
        const { request } = reply
        if (failure.upstream) {
          metrics.recordUpstreamError(failure.kind)
          const message = failure.kind === 'timeout' ? 'upstream timed out' : failure.kind === 'refused' || failure.kind === 'network' ? 'upstream unreachable' : 'upstream failed'
          request.log.warn({ reqId: request.id, kind: failure.kind, code: failure.code }, message)
        } else {
          // Nothing reached the app: the request as built was refused by undici, a Gatehouse bug.
          request.log.error({ reqId: request.id, code: failure.code, err: (error as { cause?: unknown }).cause ?? error }, 'request could not be forwarded')
        }
        const body = failure.status === 504 ? 'gateway_timeout' : failure.status === 502 ? 'bad_gateway' : 'internal_error'
        void reply.code(failure.status).type('application/json; charset=utf-8').header('cache-control', 'no-store').send({ error: body })
      }
    },
    wsClientOptions: {
      rewriteRequestHeaders: (_headers: unknown, request: FastifyRequest) => forwardWebSocketHeaders(request, forwardOptions, identityOf(request))
    }
  })
  if (config.upstream.websocket) ignoreNonWebSocketUpgrades(fastify.server)
}
