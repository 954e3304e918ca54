import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { Clock } from '../clock.ts'
import type { Metrics } from '../metrics/registry.ts'
import { probeWritable, type Db } from '../store/db.ts'
import type { StatusReport } from './status.ts'
import { statusPage } from './status-page.ts'

/** Options of {@link adminPlugin}. */
export interface AdminPluginOptions {
  metrics: Metrics
  db: Db
  clock: Clock
  status: () => StatusReport | Promise<StatusReport>
  /** True once shutdown has begun: readiness fails so load balancers drain us first. */
  closing: () => boolean
  /** The exposition text `/metrics` serves; the registry's own when absent. */
  metricsText?: () => Promise<string>
  /** Seconds between reloads of /status.html. Default is 10. */
  refreshSeconds?: number
  /** Resets every open or failing circuit; returns the servers reset (`POST /breakers/reset`). */
  resetBreakers?: () => string[]
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1'])

/**
 * The admin listener's routes: Prometheus metrics, liveness, readiness (config loaded and
 * database writable — never Keycloak, so an IdP outage cannot take every sidecar out of
 * rotation at once), the status report and its dashboard, and one operator action.
 */
export async function adminPlugin (fastify: FastifyInstance, options: AdminPluginOptions): Promise<void> {
  const metricsText = options.metricsText ?? (async () => await options.metrics.registry.metrics())
  fastify.get('/metrics', async (request, reply) => {
    let body: string
    try {
      body = await metricsText()
    } catch (err) {
      request.log.error({ reqId: request.id, err }, 'metrics unavailable')
      return reply.code(503).type('text/plain').send('metrics unavailable\n')
    }
    return reply.type(options.metrics.registry.contentType).send(body)
  })

  fastify.get('/healthz', async () => ({ status: 'ok' }))

  fastify.get('/readyz', async (request, reply) => {
    if (options.closing()) return reply.code(503).send({ status: 'shutting_down' })
    const failure = probeWritable(options.db, options.clock.now())
    if (failure !== null) {
      request.log.error({ reqId: request.id, err: failure }, 'database is not writable')
      return reply.code(503).send({ status: 'database_unwritable' })
    }
    return { status: 'ready' }
  })

  fastify.get('/status', async (_request, reply) => reply.header('cache-control', 'no-store').send(await options.status()))

  fastify.get('/status.html', async (_request, reply) => {
    const nonce = randomBytes(16).toString('base64')
    const html = statusPage(await options.status(), { refreshSeconds: options.refreshSeconds ?? 10, now: options.clock.now(), nonce })
    return reply.type('text/html; charset=utf-8')
      .header('content-security-policy', `default-src 'none'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-store')
      .send(html)
  })

  // `gatehouse doctor fix` resets the circuits of the instance running on this host. Only
  // from loopback, and only with a JSON body: a web page cannot send that cross-origin
  // without a CORS preflight, which this listener never answers (Fetch, "CORS-safelisted
  // request-header"), so a browser on the host cannot be made to reset circuits.
  fastify.post('/breakers/reset', async (request, reply) => {
    if (options.resetBreakers === undefined) return reply.code(404).send({ error: 'not_found' })
    if (!LOOPBACK.has(request.socket.remoteAddress ?? '')) return reply.code(403).send({ error: 'forbidden', error_description: 'only from loopback' })
    if (!(request.headers['content-type'] ?? '').toLowerCase().startsWith('application/json')) return reply.code(415).send({ error: 'unsupported_media_type', error_description: 'send {} as application/json' })
    return { reset: options.resetBreakers() }
  })
}
