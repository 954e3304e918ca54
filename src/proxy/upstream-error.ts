import type { UpstreamErrorKind } from '../metrics/registry.ts'

/** What a failed proxied request was, and how it is answered. */
export type ForwardFailure =
  | { upstream: true, kind: UpstreamErrorKind, status: 502 | 504, code: string | undefined }
  /** The request could not be sent as built (undici refused it): Gatehouse's fault, not the app's. */
  | { upstream: false, status: 500, code: string | undefined }

// @fastify/reply-from wraps undici's error (kept in `cause`) in one of its own; either code may
// be the telling one. Codes: undici's errors.js and Node's errno names.
const TIMEOUT = new Set(['FST_REPLY_FROM_GATEWAY_TIMEOUT', 'FST_REPLY_FROM_TIMEOUT', 'FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT'])
const REFUSED = new Set(['ECONNREFUSED'])
const RESET = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED'])
const NETWORK = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN'])
// The app answered, but not with HTTP that can be passed on (llhttp's HPE_* codes are matched by prefix).
const BAD_RESPONSE = new Set(['FST_REPLY_FROM_BAD_GATEWAY', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'UND_ERR_RES_EXCEEDED_MAX_SIZE', 'UND_ERR_INFO', 'UND_ERR_RESPONSE_STATUS_CODE'])
// undici refusing the request it was given: nothing reached the app.
const NOT_SENT = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_HTTP_TOKEN', 'ERR_INVALID_CHAR'])

/**
 * Classifies the error @fastify/reply-from reports for a proxied request: 504 for a timeout,
 * 502 for every other failure of the app or the way to it (refused, reset, unresolvable or
 * unreachable, an answer that is not HTTP, or anything else undici reports), 500 when undici refused to send the request at
 * all, which is no reason to page whoever runs the app.
 */
export function classifyForwardError (error: unknown): ForwardFailure {
  const outer = error as { code?: unknown, cause?: { code?: unknown } } | null
  const causeCode = typeof outer?.cause?.code === 'string' ? outer.cause.code : undefined
  const outerCode = typeof outer?.code === 'string' ? outer.code : undefined
  const code = causeCode ?? outerCode
  const has = (set: ReadonlySet<string>): boolean => (causeCode !== undefined && set.has(causeCode)) || (outerCode !== undefined && set.has(outerCode))
  if (has(NOT_SENT)) return { upstream: false, status: 500, code }
  if (has(TIMEOUT)) return { upstream: true, kind: 'timeout', status: 504, code }
  if (has(REFUSED)) return { upstream: true, kind: 'refused', status: 502, code }
  if (has(RESET)) return { upstream: true, kind: 'reset', status: 502, code }
  if (has(NETWORK)) return { upstream: true, kind: 'network', status: 502, code }
  if (has(BAD_RESPONSE) || code?.startsWith('HPE_') === true) return { upstream: true, kind: 'bad_response', status: 502, code }
  return { upstream: true, kind: 'other', status: 502, code }
}
