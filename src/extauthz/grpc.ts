import { Server, ServerCredentials, status as grpcStatus, type handleUnaryCall, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js'
import type { Logger } from 'pino'
import type { AccessLog } from '../access-log.ts'
import type { Config } from '../config/schema.ts'
import type { Decide } from '../decision/decide.ts'
import type { SpoofableHeaders } from '../decision/identity-headers.ts'
import type { Listener } from '../listener.ts'
import { envoyAnswer, type EnvoyAnswer } from './envoy.ts'
import { GrpcHealth } from './grpc-health.ts'
import { AUTHORIZATION_SERVICE, loadGrpcServices, UNDECODABLE, type CheckRequest, type CheckResponse, type HeaderValueOption, type HttpRequestAttributes } from './grpc-protos.ts'

/** What the gRPC ext_authz listener needs. */
export interface ExtAuthzGrpcDeps {
  config: Config
  decide: Decide
  spoofable: SpoofableHeaders
  log: Logger
  /** Where access lines go; none when null. */
  accessLog: AccessLog | null
}

type Request = CheckRequest | typeof UNDECODABLE
/** A CheckResponse, or one already encoded (see {@link createResponder}). */
type Response = CheckResponse | Buffer
type Call = ServerUnaryCall<Request, Response>

// google.rpc.Code OK: the one status that lets a request through (protocol-facts §B.1).
const OK_STATUS = Object.freeze({ code: grpcStatus.OK })
const NO_HEADERS: readonly HeaderValueOption[] = Object.freeze([])
const COLON = 0x3a

/**
 * Envoy's gRPC ext_authz service (`envoy.service.auth.v3.Authorization/Check`, protocol-facts
 * §B) and the gRPC health service, on a listener of their own (`grpc.host`, `grpc.port`).
 *
 * A check is decided by `decide()` on the request Envoy describes (`attributes.request.http`:
 * its method, its path with the query, its headers from `headers` or, with Envoy's
 * `encode_raw_headers`, from `header_map`; `host` from `http.host`; pseudo-headers skipped),
 * and the decision translated by {@link envoyAnswer}, as the HTTP service does:
 * - allow: status OK with an `OkHttpResponse` whose identity headers overwrite any the request
 *   carries (`append_action: OVERWRITE_IF_EXISTS_OR_ADD`, the deprecated `append` unset) and
 *   whose `headers_to_remove` names every spoofable header Gatehouse did not set;
 * - deny: UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT (a path that is not
 *   origin-form, or none) or INTERNAL, with a `DeniedHttpResponse` (status, WWW-Authenticate
 *   or Location, body), which Envoy sends the client as it is.
 *
 * A call that carries nothing to decide on (bytes that are not a CheckRequest, no
 * `attributes.request.http`, no method) fails with INVALID_ARGUMENT; one larger than
 * `grpc.max_message_bytes` is refused by grpc-js before it is decoded, with RESOURCE_EXHAUSTED.
 * The deadline the caller sends (`grpc-timeout`; Envoy's `grpc_service.timeout`) is grpc-js's
 * to enforce: at the deadline the call ends with DEADLINE_EXCEEDED, and a decision that
 * finishes later (a JWKS refresh from a slow Keycloak) is dropped, never written.
 */
export function extAuthzGrpcListener (deps: ExtAuthzGrpcDeps): Listener {
  const { config } = deps
  const services = loadGrpcServices()
  const health = new GrpcHealth([AUTHORIZATION_SERVICE])
  // Channelz stays on (grpc-js's default) although nothing serves it: with it off, grpc-js
  // 1.14 does not track its sessions, and forceShutdown (closeConnections) would leave them
  // open. It costs no measurable time per call.
  const server = new Server({ 'grpc.max_receive_message_length': config.grpc.max_message_bytes })
  const check = createCheck(deps, createResponder(deps.spoofable, services.encodeCheckResponse))
  server.addService(services.authorization, { Check: check })
  server.addService(services.health, health.implementation)
  const { host, port } = config.grpc
  // A bare IPv6 address needs brackets before its port (grpc-js parses `host:port`).
  const address = host.includes(':') ? `[${host}]` : host
  return {
    name: 'grpc',
    listen: () => new Promise((resolve, reject) => {
      server.bindAsync(`${address}:${port}`, ServerCredentials.createInsecure(), (err, bound) => {
        if (err !== null) reject(err)
        else resolve(`http://${address}:${bound}`)
      })
    }),
    // Health first, so that a prober sees NOT_SERVING for as long as the listener stays up;
    // then no new calls, and the ones in flight finish (server.ts cuts them at the grace period).
    close: () => new Promise((resolve) => {
      health.shutDown()
      server.tryShutdown(() => { resolve() })
    }),
    closeConnections: () => { server.forceShutdown() }
  }
}

function createCheck (deps: ExtAuthzGrpcDeps, checkResponse: (answer: EnvoyAnswer) => Response): handleUnaryCall<Request, Response> {
  const { decide, spoofable, log, accessLog } = deps
  const redirectBrowsers = deps.config.ext_authz.redirect_browsers
  const answer = async (call: Call, http: HttpRequestAttributes, started: number, callback: sendUnaryData<Response>): Promise<void> => {
    const headers = requestHeaders(http)
    const proto = headers['x-forwarded-proto']
    const ip = (call.request as CheckRequest).attributes?.source?.address?.socket_address?.address ?? ''
    const target = http.path ?? ''
    const decision = await decide({
      entry: 'ext_authz_grpc',
      method: http.method as string,
      target,
      headers,
      ip,
      // As the HTTP service: the scheme the client used, as Envoy forwards it.
      scheme: proto !== undefined ? firstValue(proto) : http.scheme,
      redirectBrowsers
    })
    // The call ended meanwhile (its deadline passed, or Envoy gave up): nothing may be
    // written to it any more. decide() has no way to be stopped; its answer is dropped. The
    // deadline is compared too: grpc-js's own timer may not have fired yet.
    if (call.cancelled || Date.now() >= (call.getDeadline() as number)) {
      log.debug({ reason: decision.reason }, 'ext_authz check ended before its decision; answer dropped')
      return
    }
    const envoy = envoyAnswer(decision, Object.keys(headers), spoofable, headers.authorization)
    callback(null, checkResponse(envoy))
    if (accessLog !== null) {
      const path = decision.kind === 'allow' ? decision.target : target
      const q = path.indexOf('?')
      const identity = decision.kind === 'redirect' ? null : decision.identity
      accessLog.write({
        reqId: (headers['x-request-id'] ?? http.id ?? '').slice(0, 128),
        method: http.method as string,
        path: (q === -1 ? path : path.slice(0, q)).slice(0, 512),
        status: envoy.allow ? 200 : envoy.status,
        decision: decision.kind,
        reason: decision.reason,
        rule: decision.rule,
        missing: decision.kind === 'deny' ? decision.missing ?? null : null,
        authMode: identity?.authMode ?? 'none',
        user: identity?.user ?? null,
        ip,
        latencyMs: Math.round((performance.now() - started) * 100) / 100
      })
    }
  }
  return (call, callback) => {
    const started = performance.now()
    const http = httpRequestOf(call.request)
    if (typeof http === 'string') {
      log.debug({ problem: http }, 'ext_authz check request malformed')
      callback({ code: grpcStatus.INVALID_ARGUMENT, details: http })
      return
    }
    answer(call, http, started, callback).catch((err: unknown) => {
      log.error({ err }, 'ext_authz check failed')
      if (!call.cancelled) callback({ code: grpcStatus.INTERNAL, details: 'internal error' })
    })
  }
}

/**
 * The HTTP request a check describes, or what is wrong with it: nothing to decide on is the
 * caller's mistake (INVALID_ARGUMENT for the call). A missing or non-origin-form path is not:
 * decide() refuses it (bad_path: a CheckResponse with INVALID_ARGUMENT and a 400 for the
 * client), a deny Envoy enforces whatever its failure_mode_allow says.
 */
function httpRequestOf (request: Request): HttpRequestAttributes | string {
  if (request === UNDECODABLE) return 'the message is not a CheckRequest'
  const http = request.attributes?.request?.http
  if (http === undefined) return 'attributes.request.http is missing'
  if (http.method === undefined || http.method === '') return 'attributes.request.http.method is missing'
  return http
}

/** The first value of a comma-separated header, trimmed (`https, http` → `https`). */
function firstValue (value: string): string {
  const comma = value.indexOf(',')
  return (comma === -1 ? value : value.slice(0, comma)).trim()
}

/**
 * The headers `decide()` sees, as Node gives the HTTP entry points theirs: names lower-case,
 * no pseudo-headers (the method and path come from their own fields), `host` from `http.host`.
 * `header_map` entries (key and raw bytes, read as latin1 as Node reads header bytes) are
 * joined as Envoy joins repeated headers in `headers`: with commas, cookies with `; `.
 */
function requestHeaders (http: HttpRequestAttributes): Record<string, string> {
  // No prototype: the names are the client's.
  const out: Record<string, string> = Object.create(null) as Record<string, string>
  const raw = http.header_map?.headers
  if (raw !== undefined) {
    for (const entry of raw) {
      const key = entry.key?.toLowerCase()
      if (key === undefined || key === '' || key.charCodeAt(0) === COLON) continue
      const value = entry.raw_value !== undefined && entry.raw_value.length > 0 ? entry.raw_value.toString('latin1') : entry.value ?? ''
      const earlier = out[key]
      out[key] = earlier === undefined ? value : `${earlier}${key === 'cookie' ? '; ' : ', '}${value}`
    }
  } else if (http.headers !== undefined) {
    const map = http.headers
    for (const name in map) {
      if (name.charCodeAt(0) !== COLON) out[name.toLowerCase()] = map[name] as string
    }
  }
  if (out.host === undefined && http.host !== undefined && http.host !== '') out.host = http.host
  return out
}

/** Each header, to be set whatever the request carried (never appended: protocol-facts §B.2). */
function headerOptions (headers: Readonly<Record<string, string>>): readonly HeaderValueOption[] {
  const list: HeaderValueOption[] = []
  for (const key in headers) list.push({ header: { key, value: utf8Value(headers[key] as string) }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' })
  return list.length === 0 ? NO_HEADERS : list
}

/**
 * A header value for `HeaderValue.value`, a protobuf `string` (UTF-8 on the wire). Identity
 * headers come spelt for Node, which writes header strings as latin1: a non-ASCII name is
 * its UTF-8 bytes one per character (identity-headers.ts). Read back as UTF-8, it is sent as
 * the very bytes the HTTP entry points send.
 */
function utf8Value (value: string): string {
  for (let i = 0; i < value.length; i++) {
    if (value.charCodeAt(i) > 0x7e) return Buffer.from(value, 'latin1').toString('utf8')
  }
  return value
}

/**
 * Translates {@link EnvoyAnswer}s into CheckResponses (protocol-facts §B.1). An allowed
 * token's identity headers are the same frozen object on every request it makes (decide.ts);
 * while that object lives, its header list is kept, and so is its whole CheckResponse,
 * encoded, for every request that carries no spoofable header beyond the configured names:
 * the common case is then one WeakMap lookup, with nothing to build or encode.
 */
function createResponder (spoofable: SpoofableHeaders, encode: (response: CheckResponse) => Buffer): (answer: EnvoyAnswer) => Response {
  const perIdentity = new WeakMap<Readonly<Record<string, string>>, { headers: readonly HeaderValueOption[], removed: number, encoded: Buffer }>()
  return (answer) => {
    if (answer.allow) {
      const set = answer.headers
      let kept = perIdentity.get(set)
      if (kept === undefined) {
        const headers = headerOptions(set)
        // Only the frozen (shared) objects are worth keeping; a public route's `{}` is new each time.
        if (!Object.isFrozen(set)) return { status: OK_STATUS, ok_response: { headers, headers_to_remove: answer.remove } }
        const configured = spoofable.names.filter((name) => set[name] === undefined)
        kept = { headers, removed: configured.length, encoded: encode({ status: OK_STATUS, ok_response: { headers, headers_to_remove: configured } }) }
        perIdentity.set(set, kept)
      }
      // `remove` always holds every configured name not set (EnvoyAnswer), then whatever other
      // spoofable names the request carried: as long, it is the same list.
      if (answer.remove.length === kept.removed) return kept.encoded
      return { status: OK_STATUS, ok_response: { headers: kept.headers, headers_to_remove: answer.remove } }
    }
    return {
      status: { code: answer.grpcCode },
      denied_response: { status: { code: answer.status }, headers: headerOptions(answer.headers), body: answer.body }
    }
  }
}
