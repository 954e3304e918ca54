import type { FastifyInstance } from 'fastify'

/**
 * Makes an encapsulated Fastify context ignore request bodies: a gateway's check request is
 * decided on its line and headers, and whatever body it carries (Envoy's `with_request_body`,
 * an nginx subrequest left with its body, an original `Content-Type: application/json` with
 * `Content-Length: 0`) must neither be parsed nor fail the check. A body is read and dropped,
 * up to `bodyLimit` bytes (Fastify answers 413 beyond it).
 */
export function ignoreBodies (fastify: FastifyInstance, bodyLimit: number): void {
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_request, _body, done) => { done(null, undefined) })
}
