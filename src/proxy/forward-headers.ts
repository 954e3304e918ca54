import type { FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'

/** What {@link forwardHeaders} adds and removes. */
export interface ForwardOptions {
  /** True for client-sent headers that must never reach the app (identity headers). */
  isSpoofable: (name: string) => boolean
  /** Whether X-Forwarded-* from the peer are believed (`server.trust_proxy` is not false). */
  trustForwarded: boolean
  /** Send the client's Host (true) or leave the upstream's (false). */
  passHostHeader: boolean
  /** Identity headers from the decision, lower-case names. */
  identity: Readonly<Record<string, string>>
}

// Set by Gatehouse itself; whatever a client sent under these names is dropped first.
const FORWARDED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip', 'x-request-id'])

/**
 * The headers the app receives: the client's, minus every spoofable identity header, with
 * X-Forwarded-For/Proto/Host describing the real client (RFC 7239's de-facto predecessors,
 * as nginx and oauth2-proxy send them), then the decision's identity headers on top.
 */
export function forwardHeaders (request: FastifyRequest, headers: IncomingHttpHeaders, options: ForwardOptions): IncomingHttpHeaders {
  // A new object rather than `delete` on the given one: deleting keys turns a V8 object into a
  // slow dictionary, and undici copies and walks this object again (npm run bench).
  const out: IncomingHttpHeaders = {}
  for (const name in headers) {
    const value = headers[name]
    if (value !== undefined && !FORWARDED.has(name) && !options.isSpoofable(name)) out[name] = value
  }
  const peer = request.socket.remoteAddress ?? request.ip
  const chain = options.trustForwarded ? request.headers['x-forwarded-for'] : undefined
  out['x-forwarded-for'] = typeof chain === 'string' && chain !== '' ? `${chain}, ${peer}` : peer
  out['x-forwarded-proto'] = request.protocol
  const host = request.host
  if (host !== '') out['x-forwarded-host'] = host
  out['x-request-id'] = request.id
  if (options.passHostHeader && request.headers.host !== undefined) out.host = request.headers.host
  Object.assign(out, options.identity)
  return out
}

// A WebSocket client builds its own handshake; these must not be copied onto it.
const WS_HANDSHAKE = new Set(['connection', 'upgrade', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'content-length', 'transfer-encoding', 'keep-alive', 'te', 'trailer'])

/** As {@link forwardHeaders}, for the app-side WebSocket handshake. */
export function forwardWebSocketHeaders (request: FastifyRequest, options: ForwardOptions): Record<string, string | string[]> {
  const base: IncomingHttpHeaders = {}
  for (const [name, value] of Object.entries(request.headers)) {
    if (!WS_HANDSHAKE.has(name) && name !== 'host') base[name] = value
  }
  const out = forwardHeaders(request, base, options)
  return Object.fromEntries(Object.entries(out).filter((e): e is [string, string | string[]] => e[1] !== undefined))
}
