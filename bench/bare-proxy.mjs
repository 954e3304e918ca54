// Target (b): @fastify/http-proxy with no authentication at all, the floor Gatehouse is
// compared with; the same keep-alive pool size as Gatehouse's default.
import Fastify from 'fastify'
import httpProxy from '@fastify/http-proxy'

const app = Fastify({ logger: false })
await app.register(httpProxy, { upstream: process.argv[2], undici: { connections: 128, pipelining: 1 } })
await app.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(`${JSON.stringify({ port: app.server.address().port })}\n`)
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => { void app.close().then(() => process.exit(0)) })
