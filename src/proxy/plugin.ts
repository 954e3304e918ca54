import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import httpProxy from '@fastify/http-proxy'
import type { Config } from '../config/schema.ts'
import type { Decide, Decision } from '../decision/decide.ts'
import { spoofableHeaderTest } from '../decision/identity-headers.ts'
import { forwardHeaders, forwardWebSocketHeaders, type ForwardOptions } from './forward-headers.ts'
import { sendDecision } from './send-decision.ts'

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
}

// Methods proxied; WebDAV and the like can be added when an app needs them.
const METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']

/**
 * Everything not under the sidecar prefix goes to the app, after the decision: a deny or
 * redirect is answered here and the app never sees the request; an allow is forwarded over
 * a keep-alive pool with the normalised path, bodies streamed, identity headers replaced.
 * WebSocket upgrades are routed through the same hook, so they get the same decision.
 */
export async function proxyPlugin (fastify: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  const { config, decide } = options
  const isSpoofable = spoofableHeaderTest(config.headers)
  const forwardOptions = (request: FastifyRequest): ForwardOptions => ({
    isSpoofable,
    trustForwarded: config.server.trust_proxy !== false,
    passHostHeader: config.upstream.pass_host_header,
    identity: request.decision?.kind === 'allow' ? request.decision.headers : {}
  })

  async function gate (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const decision = await decide({ entry: 'proxy', method: request.method, target: request.url, headers: request.headers, ip: request.ip, scheme: request.protocol })
    request.decision = decision
    if (decision.kind !== 'allow') return sendDecision(reply, decision)
    // The app receives the path the decision was made on, never another spelling of it.
    request.raw.url = decision.target
    return undefined
  }

  // The plugin's types describe callback-style hooks and a literal `websocket: true`; the
  // options below are the documented ones, with an async hook Fastify itself supports.
  const plugin = httpProxy as unknown as FastifyPluginAsync<Record<string, unknown>>
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
      rewriteRequestHeaders: (request: FastifyRequest, headers: IncomingHttpHeaders) => forwardHeaders(request, headers, forwardOptions(request)),
      // reply-from retries idempotent requests on 503 by default: an auth proxy must not multiply load on a struggling app.
      retryDelay: () => null,
      onError: (reply: FastifyReply, { error }: { error: Error }) => {
        const cause = (error as { cause?: { code?: string } }).cause
        const code = (error as { code?: string }).code
        const timedOut = code === 'FST_REPLY_FROM_GATEWAY_TIMEOUT' || code === 'FST_REPLY_FROM_CONNECT_TIMEOUT' ||
          cause?.code === 'UND_ERR_HEADERS_TIMEOUT' || cause?.code === 'UND_ERR_BODY_TIMEOUT' || cause?.code === 'UND_ERR_CONNECT_TIMEOUT'
        reply.request.log.warn({ reqId: reply.request.id, code: cause?.code ?? code }, timedOut ? 'upstream timed out' : 'upstream unreachable')
        void reply.code(timedOut ? 504 : 502).type('application/json; charset=utf-8').header('cache-control', 'no-store')
          .send({ error: timedOut ? 'gateway_timeout' : 'bad_gateway' })
      }
    },
    wsClientOptions: {
      rewriteRequestHeaders: (_headers: unknown, request: FastifyRequest) => forwardWebSocketHeaders(request, forwardOptions(request))
    }
  })
}
