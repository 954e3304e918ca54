import type { FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import { carriesServiceToken } from '../decision/decide.ts'

/** What {@link forwardHeaders} adds and removes; built once per listener. */
export interface ForwardOptions {
  /** True for client-sent headers that must never reach the app (identity headers). */
  isSpoofable: (name: string) => boolean
  /** Whether X-Forwarded-* from the peer are believed (`server.trust_proxy` is not false). */
  trustForwarded: boolean
  /** Send the client's Host (true) or leave the upstream's (false). */
  passHostHeader: boolean
  /**
   * The Cookie header without Gatehouse's own cookies; the very same string when it holds
   * none, `''` when nothing is left (see `ownCookieFilter`).
   */
  withoutOwnCookies: (cookie: string) => string
}

// Set by Gatehouse itself; whatever a client sent under these names is dropped first.
const FORWARDED = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip', 'x-request-id']

// Hop-by-hop fields describe the client's connection to Gatehouse, not the request, so a proxy
// removes them before forwarding (RFC 9110 §7.6.1: Connection, Proxy-Connection, Keep-Alive,
// TE, Transfer-Encoding, Upgrade; Trailer as RFC 2616 §13.5.1 listed it, since the body is
// re-framed and its trailers are not forwarded). undici, which makes the upstream request,
// refuses Keep-Alive, Upgrade and Transfer-Encoding outright (InvalidArgumentError) and
// Expect too (NotSupportedError): forwarding them was a 502. Expect is answered by Gatehouse
// itself (expect.ts), and HTTP2-Settings is connection-specific by definition (RFC 7540 §3.2.1).
const HOP_BY_HOP = ['connection', 'proxy-connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings', 'expect']

// One lookup per header on the hot path.
const DROPPED = new Set([...FORWARDED, ...HOP_BY_HOP])

/**
 * The headers the app receives: the client's, minus every hop-by-hop header and every header
 * the client named in `Connection`, minus every spoofable identity header, Gatehouse's own
 * cookies and an `Authorization` header carrying a service token, with X-Forwarded-For/Proto/Host describing the real client (RFC 7239's de-facto
 * predecessors, as nginx and oauth2-proxy send them), then the decision's identity headers
 * (lower-case names) on top. Nothing a client names in `Connection` can remove a header
 * Gatehouse sets: those are added after the client's are filtered.
 */
export function forwardHeaders (request: FastifyRequest, headers: IncomingHttpHeaders, options: ForwardOptions, identity: Readonly<Record<string, string>>): IncomingHttpHeaders {
  // Read from the request, not `headers`: @fastify/reply-from has already deleted it there.
  const listed = connectionOptions(request.headers.connection)
  // A new object rather than `delete` on the given one: deleting keys turns a V8 object into a
  // slow dictionary, and undici copies and walks this object again (npm run bench).
  const out: IncomingHttpHeaders = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || DROPPED.has(name) || options.isSpoofable(name)) continue
    if (listed !== null && listed.includes(name)) continue
    // A service token is Gatehouse's credential for this request, not the app's: it never
    // reaches the app, whatever pass_authorization_header says (issue 16).
    if (name === 'authorization' && carriesServiceToken(value)) continue
    if (name === 'cookie' && typeof value === 'string') {
      const kept = options.withoutOwnCookies(value)
      // An empty Cookie header is no cookie (RFC 6265 §5.4 never sends one).
      if (kept !== '') out.cookie = kept
      continue
    }
    out[name] = value
  }
  const peer = request.socket.remoteAddress ?? request.ip
  const chain = options.trustForwarded ? request.headers['x-forwarded-for'] : undefined
  out['x-forwarded-for'] = typeof chain === 'string' && chain !== '' ? `${chain}, ${peer}` : peer
  out['x-forwarded-proto'] = request.protocol
  const host = request.host
  if (host !== '') out['x-forwarded-host'] = host
  out['x-request-id'] = request.id
  if (options.passHostHeader && request.headers.host !== undefined) out.host = request.headers.host
  Object.assign(out, identity)
  return out
}

/**
 * The header names a `Connection` value lists beyond the hop-by-hop ones already dropped
 * (RFC 9110 §7.6.1: a proxy removes every field named there), lower-case; null when none.
 * The usual values (`keep-alive`, `close`, `Upgrade`) return at once, without allocating.
 */
export function connectionOptions (value: string | string[] | undefined): readonly string[] | null {
  if (value === undefined || value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Upgrade' || value === 'upgrade') return null
  const names: string[] = []
  for (const part of (typeof value === 'string' ? value : value.join(',')).split(',')) {
    const name = part.trim().toLowerCase()
    if (name !== '' && name !== 'close' && !DROPPED.has(name)) names.push(name)
  }
  return names.length === 0 ? null : names
}

// A WebSocket client builds its own handshake; these must not be copied onto it.
const WS_HANDSHAKE = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'content-length', 'host'])

/** As {@link forwardHeaders}, for the app-side WebSocket handshake. */
export function forwardWebSocketHeaders (request: FastifyRequest, options: ForwardOptions, identity: Readonly<Record<string, string>>): Record<string, string | string[]> {
  const base: IncomingHttpHeaders = {}
  for (const [name, value] of Object.entries(request.headers)) {
    if (!WS_HANDSHAKE.has(name)) base[name] = value
  }
  const out = forwardHeaders(request, base, options, identity)
  return Object.fromEntries(Object.entries(out).filter((e): e is [string, string | string[]] => e[1] !== undefined))
}
