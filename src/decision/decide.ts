import type { Logger } from 'pino'
import { PathError } from '../errors.ts'
import type { HeadersConfig } from '../config/schema.ts'
import type { Identity } from '../identity.ts'
import { identityFromClaims, type ClaimsReader } from '../keycloak/claims.ts'
import type { AccessTokenVerifier, TokenRejection, VerifiedToken } from '../keycloak/verify-token.ts'
import { normaliseTarget } from '../authz/normalise-path.ts'
import { matchRule, type PolicyRule, type PolicySet } from '../authz/policy.ts'
import { shortfall, type ShortfallReason } from '../authz/requirements.ts'
import { expandIdentity, type Access } from '../authz/roles.ts'
import { identityHeaders } from './identity-headers.ts'
import { internHeaders } from '../intern.ts'
import { isServiceToken, type ServiceTokenOutcome, type ServiceTokenRejection } from '../service-token/service.ts'
import { SERVICE_TOKEN_PREFIX } from '../service-token/format.ts'

/** Which way a request came in. Only the proxy owns the sidecar prefix. */
export type EntryPoint = 'proxy' | 'forward_auth' | 'ext_authz_http' | 'ext_authz_grpc'

/** What an adapter knows of a request, and all `decide()` looks at. */
export interface RequestFacts {
  entry: EntryPoint
  method: string
  /** The request target as sent: path and query, not decoded. */
  target: string
  /** Request headers, names lower-case (Node's and Envoy's convention). */
  headers: Readonly<Record<string, string | string[] | undefined>>
  /** Client address, for logs and lockout. */
  ip?: string
  /**
   * The host the request was for, as rules with `hosts` compare it (port and case as sent).
   * Default is the `host` header (the proxy's Host; Envoy's original Host or `http.host`).
   */
  host?: string
  /**
   * The scheme the client used to reach the origin (the proxy's trusted protocol, Envoy's
   * `x-forwarded-proto`): which spelling of the session cookie is read. Default is `http`.
   */
  scheme?: string
  /**
   * Whether a browser page load without credentials is answered with a redirect to the login
   * page (the proxy; Envoy by `ext_authz.redirect_browsers`; Traefik) rather than a 401 (nginx,
   * whose `auth_request` takes only 2xx, 401 and 403). Default is true for the proxy only.
   */
  redirectBrowsers?: boolean
}

/** Why a request was let through, refused or sent to log in. */
export type DecisionReason =
  | 'public'
  | 'authenticated'
  | 'role_granted'
  /** Allowed by a rule whose conditions go beyond roles (permissions, groups, e-mail). */
  | 'requirements_met'
  | 'no_credentials'
  | 'bad_path'
  | 'reserved_path'
  | 'denied_by_policy'
  | ShortfallReason
  | 'internal_error'
  | `token_${TokenRejection | ServiceTokenRejection}`

/** The one answer every entry point translates (DESIGN §1). */
export type Decision =
  | {
    kind: 'allow'
    reason: DecisionReason
    /** Normalised path plus the query as sent: what the app receives. */
    target: string
    rule: string
    /** Null on public routes: authentication was skipped. */
    identity: Identity | null
    /** Identity headers to set on the request to the app (after every client-sent one is removed). */
    headers: Record<string, string>
  }
  | {
    kind: 'deny'
    reason: DecisionReason
    status: 400 | 401 | 403 | 404 | 500
    rule: string | null
    identity: Identity | null
    headers: Record<string, string>
    body: { error: string, error_description?: string }
    /** For a caller the rule's conditions refuse: what is missing (`any of roles admin`), as the access line records it. */
    missing?: string
  }
  | { kind: 'redirect', reason: DecisionReason, location: string, rule: string }

/** Everything `decide()` needs, built once by `buildApp`. */
export interface DeciderDeps {
  /** The policies in force, read once per decision (a PolicyStore swaps them on reload). */
  policy: PolicySource
  verifier: AccessTokenVerifier
  headers: HeadersConfig
  /** How claims become an identity (`claims.*`, and the client ids whose client roles count). */
  claims: ClaimsReader
  /** The sidecar's own route prefix (`server.prefix`). */
  prefix: string
  log: Logger
  /** Browser sessions: the identity a request's session cookie stands for, or null. */
  sessions?: SessionLookup
  /** Gatehouse's own service tokens (`ght_…`), checked before any JWT parsing; absent: refused as malformed bearer tokens. */
  serviceTokens?: ServiceTokenLookup
  /** Counts each decision, by entry point and kind, with the seconds it took. */
  record?: (entry: EntryPoint, kind: Decision['kind'], seconds: number) => void
}

/** Where `decide()` finds the policy set in force. */
export interface PolicySource {
  readonly current: PolicySet
}

/** How `decide()` reads a session cookie (the session service, behind the cookie jar). */
export interface SessionLookup {
  identify: (cookieHeader: string | string[] | undefined, scheme: string | undefined) => Promise<Identity | null>
}

/** How `decide()` checks a service token (the service-token service). */
export interface ServiceTokenLookup {
  authenticate: (token: string, ip: string | undefined) => ServiceTokenOutcome
}

/** The decision function: request facts in, {@link Decision} out. */
export type Decide = (facts: RequestFacts) => Promise<Decision>

const REALM = 'gatehouse'

/**
 * Builds the one decision function every entry point calls: normalise the path, find the
 * rule, authenticate (bearer token first), authorise, and say which identity headers the
 * app gets. It never throws: an unexpected error is a 500 deny, never an allow (fail closed).
 */
export function createDecider (deps: DeciderDeps): Decide {
  const memo: Memo = new WeakMap()
  const record = deps.record
  return async function decide (facts: RequestFacts): Promise<Decision> {
    const started = record === undefined ? 0 : performance.now()
    let decision: Decision
    try {
      decision = await decideUnsafe(deps, memo, facts)
    } catch (err) {
      deps.log.error({ err, entry: facts.entry }, 'decision failed; denying')
      decision = deny(500, 'internal_error', null, null, { error: 'internal_error' })
    }
    record?.(facts.entry, decision.kind, (performance.now() - started) / 1000)
    return decision
  }
}

async function decideUnsafe (deps: DeciderDeps, memo: Memo, facts: RequestFacts): Promise<Decision> {
  let path: string
  let query: string
  try {
    ({ path, query } = normaliseTarget(facts.target))
  } catch (err) {
    if (!(err instanceof PathError)) throw err
    return deny(400, 'bad_path', null, null, { error: 'bad_request', error_description: err.message })
  }
  if (facts.entry === 'proxy' && (path === deps.prefix || path.startsWith(`${deps.prefix}/`))) {
    return deny(404, 'reserved_path', null, null, { error: 'not_found' })
  }

  // One set decides the whole request, even when a reload lands while it waits on a session.
  const policy = deps.policy.current
  const rule = matchRule(policy, facts.method, path, facts.host ?? single(facts.headers.host))
  const target = path + query
  if (rule.requirement.kind === 'public') {
    return { kind: 'allow', reason: 'public', target, rule: rule.name, identity: null, headers: {} }
  }
  if (rule.requirement.kind === 'deny') {
    return deny(403, 'denied_by_policy', rule.name, null, { error: 'forbidden' })
  }

  const caller = await authenticate(deps, policy, memo, facts.headers, facts.entry, facts.scheme, facts.ip)
  if (caller.refused === 'no_credentials') {
    if ((facts.redirectBrowsers ?? facts.entry === 'proxy') && isBrowserNavigation(facts)) {
      return { kind: 'redirect', reason: 'no_credentials', location: `${deps.prefix}/login?rd=${encodeURIComponent(target)}`, rule: rule.name }
    }
    // RFC 6750 §3.1: a request without any authentication information gets no error code;
    // `invalid_token` is for a token that was sent and refused (below).
    return deny(401, 'no_credentials', rule.name, null, { error: 'unauthorized' }, {
      'www-authenticate': `Bearer realm="${REALM}"`
    })
  }
  if (caller.refused !== undefined) {
    return deny(401, `token_${caller.refused}`, rule.name, null, { error: 'invalid_token', error_description: caller.detail }, {
      'www-authenticate': `Bearer realm="${REALM}", error="invalid_token", error_description="${caller.detail.replace(/["\\]/g, '')}"`
    })
  }
  return authorised(rule, target, caller)
}

/** Who a request's credentials say it is, with the headers the app gets; or why there is nobody. */
type Caller =
  | Authorisable & { refused?: undefined }
  | { refused: 'no_credentials' }
  | { refused: TokenRejection | ServiceTokenRejection, detail: string }

/**
 * Authentication, the part of the decision every way of asking "who is this?" shares: a
 * bearer token first, else the session cookie. Successes are the memoised entries themselves,
 * so the request path allocates nothing for a known token or session.
 */
async function authenticate (deps: DeciderDeps, policy: PolicySet, memo: Memo, headers: RequestFacts['headers'], entry: EntryPoint, scheme: string | undefined, ip?: string): Promise<Caller> {
  const token = bearerToken(headers.authorization)
  if (token === null) {
    const identity = await deps.sessions?.identify(headers.cookie, scheme) ?? null
    return identity === null ? { refused: 'no_credentials' } : sessionHeaders(memo, identity, policy, deps)
  }
  // DESIGN §2: a service token is recognised by its prefix before any JWT parsing.
  if (deps.serviceTokens !== undefined && isServiceToken(token)) {
    const service = deps.serviceTokens.authenticate(token, ip)
    if (!service.ok) {
      deps.log.debug({ reason: service.reason, detail: service.detail, entry }, 'service token refused')
      return { refused: service.reason, detail: service.detail }
    }
    return sessionHeaders(memo, service.identity, policy, deps)
  }
  const outcome = deps.verifier.remembered(token) ?? await deps.verifier.verify(token)
  if (!outcome.ok) {
    deps.log.debug({ reason: outcome.reason, detail: outcome.detail, entry }, 'access token refused')
    return { refused: outcome.reason, detail: outcome.detail }
  }
  return derived(memo, outcome.token, token, policy, deps)
}

/**
 * The identity of a request's credentials, or null: what `{prefix}/userinfo` answers, by the
 * same authentication as {@link createDecider}'s.
 */
export function createIdentifier (deps: DeciderDeps): (headers: RequestFacts['headers'], scheme: string | undefined) => Promise<Identity | null> {
  const memo: Memo = new WeakMap()
  return async (headers, scheme) => {
    const caller = await authenticate(deps, deps.policy.current, memo, headers, 'proxy', scheme)
    return caller.refused === undefined ? caller.identity : null
  }
}

function authorised (rule: PolicyRule, target: string, caller: Extract<Caller, { refused?: undefined }>): Decision {
  const { identity, headers } = caller
  const missing = shortfall(rule.requirement, caller)
  if (missing !== null) {
    return { kind: 'deny', status: 403, reason: missing.reason, rule: rule.name, identity, headers: {}, body: { error: 'forbidden' }, missing: missing.missing }
  }
  return {
    kind: 'allow',
    reason: rule.granted,
    target,
    rule: rule.name,
    identity,
    headers
  }
}

/**
 * A top-level page load by a browser: sent to the login page rather than answered 401.
 * (Fetches and API clients do not ask for HTML first.)
 */
function isBrowserNavigation (facts: RequestFacts): boolean {
  if (facts.method !== 'GET' && facts.method !== 'HEAD') return false
  const accept = facts.headers.accept
  return typeof accept === 'string' && accept.includes('text/html')
}

/**
 * An identity as decided on: roles expanded under one policy set, its headers, and its
 * {@link Access} as fields of its own (one object per cached token or session and policy set,
 * not two).
 */
interface Authorisable extends Access { policy: PolicySet, identity: Identity, headers: Record<string, string> }

type Memo = WeakMap<object, Authorisable>

// A session hands out the same frozen identity object until something in it changes; its
// roles are expanded once per policy set (a reload expands them again, at the next request).
function sessionHeaders (memo: Memo, identity: Identity, policy: PolicySet, deps: DeciderDeps): Authorisable {
  let entry = memo.get(identity)
  if (entry === undefined || entry.policy !== policy) {
    entry = authorisable(identity, policy, deps)
    memo.set(identity, entry)
  }
  return entry
}

// The identity and headers a token yields never change under one policy set: worked out once
// per verified token, which the verifier's cache hands back as the same object on every hit.
// So the bearer path pays for role expansion once per token, not per request. Frozen, as shared.
function derived (memo: Memo, verified: VerifiedToken, token: string, policy: PolicySet, deps: DeciderDeps): Authorisable {
  let entry = memo.get(verified)
  if (entry === undefined || entry.policy !== policy) {
    entry = authorisable(verified.identity ?? identityFromClaims(verified.claims, deps.claims, token), policy, deps)
    memo.set(verified, entry)
  }
  return entry
}

function authorisable (raw: Identity, policy: PolicySet, deps: DeciderDeps): Authorisable {
  const { identity, access } = expandIdentity(raw, policy.roles)
  return {
    roles: access.roles,
    permissions: access.permissions,
    groups: access.groups,
    email: access.email,
    emailDomain: access.emailDomain,
    policy,
    identity,
    headers: internHeaders(identityHeaders(identity, deps.headers))
  }
}

function deny (
  status: 400 | 401 | 403 | 404 | 500,
  reason: DecisionReason,
  rule: string | null,
  identity: Identity | null,
  body: { error: string, error_description?: string },
  headers: Record<string, string> = {}
): Decision {
  return { kind: 'deny', status, reason, rule, identity, headers, body }
}

function single (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/**
 * The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 6750
 * §2.1). Sliced, not matched: a regular expression over a kilobyte-long token was a quarter
 * of the decision's cost, and jose refuses any token that is not base64url anyway.
 */
export function bearerToken (header: string | string[] | undefined): string | null {
  if (typeof header !== 'string') return null
  const start = bearerStart(header)
  if (start === -1) return null
  const token = header.slice(start).trimEnd()
  return token !== '' && !token.includes(' ') ? token : null
}

// Where the token of a `Bearer` header starts (after the scheme and the whitespace that
// follows it), or -1 for another scheme: a look at the first characters, never the token.
function bearerStart (header: string): number {
  if (header.length < 8 || header.slice(0, 7).toLowerCase() !== 'bearer ') return -1
  let start = 7
  while (start < header.length && /\s/.test(header[start] as string)) start++
  return start
}

/**
 * Whether an `Authorization` header carries a service token (`Bearer ght_...`, well-formed or
 * not). Such a header is Gatehouse's credential, never the app's: the proxy drops it even with
 * `headers.pass_authorization_header: false`, and Envoy is told to remove it (issue 16).
 */
export function carriesServiceToken (header: string | string[] | undefined): boolean {
  if (Array.isArray(header)) return header.some((value) => carriesServiceToken(value))
  if (typeof header !== 'string') return false
  // The proxy asks this of every request's header, JWTs included: the characters after the
  // scheme settle nearly all of them before bearerToken() scans a kilobyte-long token.
  const start = bearerStart(header)
  return start !== -1 && header.startsWith(SERVICE_TOKEN_PREFIX, start) && bearerToken(header) !== null
}
