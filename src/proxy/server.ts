import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { AccessLog } from '../access-log.ts'
import type { Config } from '../config/schema.ts'
import type { Decide } from '../decision/decide.ts'
import type { SpoofableHeaders } from '../decision/identity-headers.ts'
import type { HotPathMetrics } from '../metrics/registry.ts'
import { answerExpectations, sendContinue } from './expect.ts'
import { proxyPlugin } from './plugin.ts'

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** What the proxy listener needs. */
export interface ProxyServerOptions {
  config: Config
  decide: Decide
  /** What is stripped from the client's headers before the app gets them. */
  spoofable: SpoofableHeaders
  log: Logger
  metrics: HotPathMetrics
  /** Where access lines go; none when null. */
  accessLog: AccessLog | null
  /** Gatehouse's own routes under the prefix, registered before the proxy. */
  routes?: (fastify: FastifyInstance) => Promise<void>
}

/**
 * The proxy listener: Gatehouse's own routes under the prefix (sessions, the gateway entry
 * points) and, for everything else, the decision and the proxy. One access line and the
 * request metrics per request.
 */
export function createProxyServer (options: ProxyServerOptions): FastifyInstance {
  const { config, metrics, accessLog } = options
  const proxy = Fastify({
    loggerInstance: options.log as FastifyBaseLogger,
    // One access line of our own per request (recordRequest) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request: it cost as much as the decision itself (npm run bench).
    // The few request-scoped lines carry `reqId` themselves.
    childLoggerFactory: (logger) => logger,
    trustProxy: config.server.trust_proxy,
    genReqId: (req) => {
      const incoming = req.headers['x-request-id']
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID()
    },
    // Long paths are legitimate for proxied apps; the default router limit is 100 characters.
    routerOptions: { maxParamLength: 8192 },
    return503OnClosing: true
  })
  proxy.decorateRequest('decision', null)
  proxy.setErrorHandler(genericErrorHandler)
  proxy.addHook('onResponse', (request, reply, done) => {
    recordRequest(request, reply, metrics, accessLog)
    done()
  })
  answerExpectations(proxy.server)
  const routes = options.routes
  if (routes !== undefined) {
    void proxy.register(async (fastify) => {
      // Gatehouse's own routes read their (small) bodies before deciding anything: a client
      // waiting on `Expect: 100-continue` gets the 100 when its body is about to be read.
      fastify.addHook('preParsing', (request, reply, payload, done) => {
        if (request.headers.expect !== undefined) sendContinue(reply.raw)
        done(null, payload)
      })
      await routes(fastify)
    })
  }
  void proxy.register(proxyPlugin, { config, decide: options.decide, spoofable: options.spoofable, metrics })
  return proxy
}

/** One root error handler (HOUSE-STYLE §4): client errors keep their status, 5xx bodies say nothing. */
export function genericErrorHandler (error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const status = typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
  if (status >= 500) request.log.error({ reqId: request.id, err: error }, 'request failed')
  else request.log.debug({ reqId: request.id, code: error.code }, 'request rejected')
  return reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8')
    .send({ error: status >= 500 ? 'internal_error' : 'bad_request' })
}

/** One access line and the request metrics (never the query string: it may hold codes or tokens). */
function recordRequest (request: FastifyRequest, reply: FastifyReply, metrics: HotPathMetrics, accessLog: AccessLog | null): void {
  const decision = request.decision
  const kind = decision?.kind ?? 'none'
  const identity = decision !== null && decision.kind !== 'redirect' ? decision.identity : null
  const authMode = identity?.authMode ?? 'none'
  metrics.recordRequest(kind, authMode, reply.statusCode, reply.elapsedTime / 1000)
  if (accessLog === null) return
  const target = decision?.kind === 'allow' ? decision.target : request.url
  const q = target.indexOf('?')
  accessLog.write({
    reqId: request.id,
    method: request.method,
    path: (q === -1 ? target : target.slice(0, q)).slice(0, 512),
    status: reply.statusCode,
    decision: kind,
    reason: decision?.reason ?? null,
    rule: decision?.rule ?? null,
    missing: decision?.kind === 'deny' ? decision.missing ?? null : null,
    authMode,
    user: identity?.user ?? null,
    ip: request.ip,
    latencyMs: Math.round(reply.elapsedTime * 100) / 100
  })
}
