import type { IncomingMessage, Server, ServerResponse } from 'node:http'

// Responses whose client sent `Expect: 100-continue` and is still waiting for the 100.
const awaitingContinue = new WeakSet<ServerResponse>()

const EXPECTATION_FAILED = JSON.stringify({ error: 'expectation_failed' })

/**
 * Makes the proxy listener answer `Expect` itself (RFC 9110 §10.1.1). undici cannot forward
 * the field (it throws NotSupportedError: that was a 502), and the decision should come before
 * the body anyway: a client that asked for `100-continue` gets the 100 only once the request is
 * allowed ({@link sendContinue}), so a refused request is answered at once and never uploads
 * its body. Node's server then closes that connection, since the client may still send the
 * body. Any other expectation is a 417. Node handles `Expect` only on HTTP/1.1, as the RFC
 * asks (an HTTP/1.0 expectation is ignored); the field itself never reaches the app.
 */
export function answerExpectations (server: Server): void {
  // Without a 'checkContinue' listener Node sends the 100 before anyone has decided anything.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    awaitingContinue.add(res)
    server.emit('request', req, res)
  })
  // Answered here, before Fastify: there is nothing to decide about an expectation we cannot meet.
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(EXPECTATION_FAILED) })
    res.end(EXPECTATION_FAILED)
  })
}

/**
 * Sends `100 Continue` when the client is waiting for it (once); does nothing otherwise.
 * Callers check `request.headers.expect !== undefined` first, so other requests pay nothing.
 */
export function sendContinue (res: ServerResponse): void {
  if (awaitingContinue.delete(res)) res.writeContinue()
}
