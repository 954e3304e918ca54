import { carriesServiceToken, type Decision } from '../decision/decide.ts'
import type { SpoofableHeaders } from '../decision/identity-headers.ts'

/**
 * A decision as Envoy's ext_authz wants it, the same for its HTTP service and its gRPC
 * service (protocol-facts §A.3, §B.1): the two adapters only encode it.
 */
export type EnvoyAnswer =
  | {
    allow: true
    /** Identity headers, set on the request to the app, overwriting whatever it carried. */
    headers: Readonly<Record<string, string>>
    /**
     * Headers Envoy must remove from the request to the app: every spoofable name Gatehouse
     * did not set (a gateway may forward headers it did not show us) and every spoofable
     * header the request carried, and `authorization` when it carries a service token.
     */
    remove: readonly string[]
  }
  | {
    allow: false
    /** HTTP status the client gets: 302, 400, 401, 403 or 500. */
    status: number
    /** `WWW-Authenticate`, `Location`, `Cache-Control`… */
    headers: Readonly<Record<string, string>>
    /** The deny body (JSON), or '' for a redirect. */
    body: string
    /** The gRPC status code of the CheckResponse (google.rpc.Code). */
    grpcCode: GrpcDenyCode
  }

/** google.rpc.Code values a deny uses: INVALID_ARGUMENT, PERMISSION_DENIED, INTERNAL, UNAUTHENTICATED. */
export type GrpcDenyCode = 3 | 7 | 13 | 16

const NO_STORE = 'no-store'

/**
 * Translates a decision for Envoy; `requestHeaders` are the names the check request carried,
 * `authorization` its Authorization header (a service token there is removed before the app).
 */
export function envoyAnswer (decision: Decision, requestHeaders: Iterable<string>, spoofable: SpoofableHeaders, authorization?: string | string[]): EnvoyAnswer {
  if (decision.kind === 'allow') {
    const set = decision.headers
    const remove = new Set<string>()
    for (const name of spoofable.names) if (set[name] === undefined) remove.add(name)
    for (const raw of requestHeaders) {
      const name = raw.toLowerCase()
      if (set[name] === undefined && spoofable.test(name)) remove.add(name)
    }
    // Envoy forwards the client's Authorization unless told otherwise; a service token is
    // Gatehouse's credential, never the app's (issue 16).
    if (set.authorization === undefined && carriesServiceToken(authorization)) remove.add('authorization')
    return { allow: true, headers: set, remove: [...remove] }
  }
  if (decision.kind === 'redirect') {
    return { allow: false, status: 302, headers: { location: decision.location, 'cache-control': NO_STORE }, body: '', grpcCode: 16 }
  }
  return {
    allow: false,
    status: decision.status,
    headers: { ...decision.headers, 'cache-control': NO_STORE, 'content-type': 'application/json; charset=utf-8' },
    body: JSON.stringify(decision.body),
    grpcCode: grpcCodeOf(decision.status)
  }
}

function grpcCodeOf (status: number): GrpcDenyCode {
  if (status === 401) return 16
  if (status === 403) return 7
  if (status === 400) return 3
  return 13
}
