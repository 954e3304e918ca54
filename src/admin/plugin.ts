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
  status: () => Promise<StatusReport>
  /** True once shutdown has begun: readiness fails so load balancers drain us first. */
  closing: () => boolean
}

/**
 * The admin listener's routes: Prometheus metrics, liveness, readiness (config loaded and
 * database writable — never Keycloak, so an IdP outage cannot take every sidecar out of
 * rotation at once), and the status report.
 */
export async function adminPlugin (fastify: FastifyInstance, options: AdminPluginOptions): Promise<void> {
  fastify.get('/metrics', async (_request, reply) => {
    const body = await options.metrics.registry.metrics()
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

  fastify.get('/status', async () => await options.status())

  fastify.get('/status.html', async (_request, reply) => {
    return reply.type('text/html; charset=utf-8')
      .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'")
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-store')
      .send(statusPage(await options.status()))
  })
}
