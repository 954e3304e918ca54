import { KeycloakRejected, KeycloakUnavailable, type UnavailableKind } from '../errors.ts'

/** Largest Keycloak answer Gatehouse reads. A JWKS or token response is a few kilobytes. */
export const MAX_RESPONSE_BYTES = 1024 * 1024

/** Where a call goes and under which deadline. */
export interface CallContext {
  /** Back-channel server the call is made to (for errors and metrics). */
  server: string
  /** Aborts the call when the overall deadline passes. */
  signal: AbortSignal
}

/**
 * `fetch` to Keycloak with every failure turned into one of two errors at this boundary
 * (HOUSE-STYLE §4): {@link KeycloakUnavailable} (timeout, refused, reset, 5xx — counts toward
 * the breaker) or {@link KeycloakRejected} (4xx — Keycloak is up and said no).
 */
export async function keycloakFetch (url: string, init: RequestInit, ctx: CallContext): Promise<Response> {
  let response: Response
  try {
    response = await fetch(url, { ...init, signal: ctx.signal, redirect: 'manual' })
  } catch (err) {
    throw unavailableFrom(err, ctx)
  }
  if (response.status >= 500) {
    await response.body?.cancel().catch(() => {})
    throw new KeycloakUnavailable('http_5xx', `keycloak answered ${response.status}`, { server: ctx.server })
  }
  if (response.status >= 400) {
    const body = await readJson(response, ctx).catch(() => null) as Record<string, unknown> | null
    const oauthError = typeof body?.error === 'string' ? body.error : undefined
    const description = typeof body?.error_description === 'string' ? `: ${body.error_description}` : ''
    throw new KeycloakRejected(response.status, `keycloak refused the request (${response.status}${oauthError !== undefined ? ` ${oauthError}` : ''}${description})`, {
      server: ctx.server,
      ...(oauthError !== undefined ? { oauthError } : {})
    })
  }
  if (response.status >= 300) {
    await response.body?.cancel().catch(() => {})
    throw new KeycloakUnavailable('bad_response', `keycloak answered a redirect (${response.status}); check the server URL`, { server: ctx.server })
  }
  return response
}

/** Reads a JSON body within the same deadline, refusing anything over {@link MAX_RESPONSE_BYTES}. */
export async function readJson (response: Response, ctx: CallContext): Promise<unknown> {
  let text: string
  try {
    const declared = Number(response.headers.get('content-length') ?? '0')
    if (declared > MAX_RESPONSE_BYTES) throw new KeycloakUnavailable('bad_response', 'keycloak answer is too large', { server: ctx.server })
    const buffer = await response.arrayBuffer()
    if (buffer.byteLength > MAX_RESPONSE_BYTES) throw new KeycloakUnavailable('bad_response', 'keycloak answer is too large', { server: ctx.server })
    text = new TextDecoder().decode(buffer)
  } catch (err) {
    if (err instanceof KeycloakUnavailable) throw err
    throw unavailableFrom(err, ctx)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new KeycloakUnavailable('bad_response', 'keycloak answer is not JSON', { server: ctx.server, cause: err })
  }
}

/** Classifies a network-level failure (undici wraps the socket error in `cause`). */
export function unavailableFrom (err: unknown, ctx: CallContext): KeycloakUnavailable {
  if (err instanceof KeycloakUnavailable) return err
  const error = err as { name?: string, code?: string, cause?: { code?: string, name?: string } }
  const code = error.cause?.code ?? error.code
  let kind: UnavailableKind = 'network'
  if (ctx.signal.aborted || error.name === 'AbortError' || error.name === 'TimeoutError' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    kind = 'timeout'
  } else if (code === 'ECONNREFUSED') {
    kind = 'refused'
  } else if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') {
    kind = 'reset'
  }
  const messages: Record<UnavailableKind, string> = {
    timeout: 'keycloak did not answer before the deadline',
    refused: 'keycloak refused the connection',
    reset: 'keycloak reset the connection',
    network: `keycloak could not be reached${code !== undefined ? ` (${code})` : ''}`,
    http_5xx: 'keycloak answered 5xx',
    bad_response: 'keycloak answered something unexpected'
  }
  return new KeycloakUnavailable(kind, messages[kind], { server: ctx.server, cause: err })
}
