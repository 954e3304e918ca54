import * as oidcClient from 'openid-client'
import { KeycloakRejected, KeycloakUnavailable, type UnavailableKind } from '../errors.ts'

/*
 * The one funnel for Keycloak failures (HOUSE-STYLE §4). Every call to Keycloak, whether made
 * with fetch here, through openid-client or through the Admin API client, comes out of it as
 * one of two errors: KeycloakUnavailable (timeout, refused, reset, 5xx, a redirect or an
 * unreadable answer: counts toward the breaker) or KeycloakRejected (Keycloak answered 4xx:
 * it is up and said no). Nothing else classifies HTTP statuses or network errors.
 */

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
 * `fetch` to Keycloak: 2xx answers are returned, everything else is thrown as
 * {@link KeycloakUnavailable} or {@link KeycloakRejected}.
 */
export async function keycloakFetch (url: string, init: RequestInit, ctx: CallContext): Promise<Response> {
  const response = await send(url, init, ctx)
  if (response.status >= 400) throw rejectedBy(response.status, await readJson(response, ctx).catch(() => null), ctx.server)
  return response
}

/**
 * `fetch` to Keycloak for a library that reads Keycloak's 4xx answers itself (openid-client
 * parses OAuth error bodies and challenges): network failures, 5xx and redirects are thrown
 * as {@link keycloakFetch} throws them; 2xx and 4xx answers are returned with their body
 * already read, inside the deadline, so the library never reads a body after it.
 */
export async function keycloakFetchBuffered (url: string, init: RequestInit, ctx: CallContext): Promise<Response> {
  const response = await send(url, init, ctx)
  const body = await readBody(response, ctx)
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers })
}

async function send (url: string, init: RequestInit, ctx: CallContext): Promise<Response> {
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
  if (response.status >= 300 && response.status < 400) {
    await response.body?.cancel().catch(() => {})
    throw new KeycloakUnavailable('bad_response', `keycloak answered a redirect (${response.status}); check the server URL`, { server: ctx.server })
  }
  return response
}

/** Reads a JSON body within the same deadline, refusing anything over {@link MAX_RESPONSE_BYTES}. */
export async function readJson (response: Response, ctx: CallContext): Promise<unknown> {
  const text = new TextDecoder().decode(await readBody(response, ctx))
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new KeycloakUnavailable('bad_response', 'keycloak answer is not JSON', { server: ctx.server, cause: err })
  }
}

async function readBody (response: Response, ctx: CallContext): Promise<ArrayBuffer> {
  const tooLarge = (): KeycloakUnavailable => new KeycloakUnavailable('bad_response', 'keycloak answer is too large', { server: ctx.server })
  if (Number(response.headers.get('content-length') ?? '0') > MAX_RESPONSE_BYTES) {
    await response.body?.cancel().catch(() => {})
    throw tooLarge()
  }
  let buffer: ArrayBuffer
  try {
    buffer = await response.arrayBuffer()
  } catch (err) {
    throw unavailableFrom(err, ctx)
  }
  if (buffer.byteLength > MAX_RESPONSE_BYTES) throw tooLarge()
  return buffer
}

/**
 * A 4xx answer as {@link KeycloakRejected}, with the OAuth `error` (RFC 6749 §5.2) or the Admin
 * API's `errorMessage` when the body has one. A body that is not JSON, or not an error
 * object, is still a rejection: the status decides, not the body.
 */
export function rejectedBy (status: number, body: unknown, server?: string): KeycloakRejected {
  const b = body !== null && typeof body === 'object' ? body as Record<string, unknown> : {}
  const oauthError = typeof b.error === 'string' ? b.error : undefined
  const detail = [b.error_description, b.errorMessage].find((v): v is string => typeof v === 'string')
  return new KeycloakRejected(status, `keycloak refused the request (${status}${oauthError !== undefined ? ` ${oauthError}` : ''}${detail !== undefined ? `: ${detail}` : ''})`, {
    ...(server !== undefined ? { server } : {}),
    ...(oauthError !== undefined ? { oauthError } : {})
  })
}

/**
 * A library's error (openid-client, the Admin API client) from a call to Keycloak as one of
 * Gatehouse's two. The cause chain is walked: the libraries wrap what our fetch threw, and
 * keep the answer they refused as a `Response` cause. An error carrying no answer and no
 * network failure means Keycloak's answer failed the library's checks (an ID token claim, a
 * malformed token response): a rejection with status 502, which is not a 4xx, so callers
 * that treat 4xx as final do not treat a broken answer as one.
 */
export function keycloakErrorOf (err: unknown, ctx?: CallContext): KeycloakUnavailable | KeycloakRejected {
  const server = ctx?.server
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof KeycloakUnavailable || e instanceof KeycloakRejected) return e
    if (e instanceof oidcClient.ResponseBodyError) return rejectedBy(e.status, { error: e.error, error_description: e.error_description }, server)
    if (e instanceof oidcClient.WWWAuthenticateChallengeError) {
      // A 401 with a challenge (as for bad client credentials): the OAuth error is in its parameters.
      const params = e.cause.find((c) => c.parameters.error !== undefined)?.parameters
      return rejectedBy(e.status, { error: params?.error ?? 'invalid_client', error_description: params?.error_description }, server)
    }
    if (e instanceof Response) return answerError(e.status, null, server)
    // The Admin API client's NetworkError: the answer it refused, and its parsed body.
    const answered = e as { response?: unknown, responseData?: unknown }
    if (answered.response instanceof Response) return answerError(answered.response.status, answered.responseData ?? null, server)
  }
  if (ctx !== undefined && isNetworkError(err)) return unavailableFrom(err, ctx)
  return new KeycloakRejected(502, `keycloak's answer failed validation: ${(err as Error).message}`, { cause: err, ...(server !== undefined ? { server } : {}) })
}

function answerError (status: number, body: unknown, server: string | undefined): KeycloakUnavailable | KeycloakRejected {
  if (status >= 400 && status < 500) return rejectedBy(status, body, server)
  if (status >= 500) return new KeycloakUnavailable('http_5xx', `keycloak answered ${status}`, server !== undefined ? { server } : {})
  return new KeycloakUnavailable('bad_response', `keycloak answered something unexpected (${status})`, server !== undefined ? { server } : {})
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

function isNetworkError (err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const { name, code } = e as { name?: string, code?: string }
    if (name === 'AbortError' || name === 'TimeoutError' || (code !== undefined && NETWORK_CODES.has(code))) return true
    if (name === 'TypeError' && (e as Error).message === 'fetch failed') return true
  }
  return false
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
