/**
 * The error catalogue. Every error Gatehouse raises on purpose carries a `code` from
 * {@link ErrorCode}; `docs/errors.md` documents each one and a test keeps the two in step.
 */

/** Every error code Gatehouse can raise. */
export type ErrorCode =
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_CONFIG_READ'
  | 'ERR_CONFIG_INVALID'
  | 'ERR_DB_OPEN'
  | 'ERR_DB_NEWER_SCHEMA'
  | 'ERR_DB_MIGRATION'
  | 'ERR_STORE_REDIS'
  | 'ERR_POLICY_INVALID'
  | 'ERR_PATH_INVALID'
  | 'ERR_KEYCLOAK_UNAVAILABLE'
  | 'ERR_KEYCLOAK_REJECTED'
  | 'ERR_KEYCLOAK_DISABLED'
  | 'ERR_KEYCLOAK_CIRCUIT_OPEN'
  | 'ERR_KEYCLOAK_BAD_RESPONSE'
  | 'ERR_CLI_USAGE'
  | 'ERR_PROVIDER_NOT_KEYCLOAK'
  | 'ERR_SERVICE_TOKEN_EXISTS'
  | 'ERR_SERVICE_TOKEN_NOT_FOUND'
  | 'ERR_SERVICE_TOKEN_REVOKED'
  | 'ERR_SERVICE_TOKEN_CONFLICT'
  | 'ERR_SERVICE_TOKEN_DELIVERY'
  | 'ERR_SERVICE_TOKEN_REDIS_UNAVAILABLE'

/** Options shared by every Gatehouse error. */
export interface GatehouseErrorOptions {
  /** HTTP status an adapter should answer with, when the error reaches one. */
  statusCode?: number
  /** The lower-level error this one wraps. */
  cause?: unknown
}

/** Base class of every error Gatehouse raises on purpose. */
export class GatehouseError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number | undefined

  constructor (code: ErrorCode, message: string, options: GatehouseErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.statusCode = options.statusCode
  }
}

/** Our own misuse: bad constructor options. Thrown at construction, never on a request. */
export class CodedTypeError extends TypeError {
  readonly code: ErrorCode = 'ERR_INVALID_ARG_VALUE'

  constructor (message: string) {
    super(message)
    this.name = 'CodedTypeError'
  }
}

/** One problem found in a configuration file: where, what was expected, what was found. */
export interface ConfigProblem {
  /** Full key path, dotted, with `[n]` for array items (`keycloak.ha.servers[1].weight`). */
  path: string
  /** What the key should hold. */
  expected: string
  /** What the file held, rendered for a person (secrets are never rendered). */
  received: string
}

/** The configuration could not be read or did not validate. Lists every problem at once. */
export class ConfigError extends GatehouseError {
  readonly problems: readonly ConfigProblem[]

  constructor (code: 'ERR_CONFIG_READ' | 'ERR_CONFIG_INVALID', message: string, problems: ConfigProblem[] = [], options: GatehouseErrorOptions = {}) {
    super(code, message, options)
    this.problems = problems
  }
}

/** The SQLite store could not be opened or migrated. */
export class StoreError extends GatehouseError {}

/** A policy file is invalid. */
export class PolicyError extends GatehouseError {
  readonly problems: readonly ConfigProblem[]

  constructor (message: string, problems: ConfigProblem[] = []) {
    super('ERR_POLICY_INVALID', message)
    this.problems = problems
  }
}

/** Classes of Keycloak failure that count toward a circuit breaker. */
export type UnavailableKind = 'timeout' | 'refused' | 'reset' | 'network' | 'http_5xx' | 'bad_response'

/**
 * Keycloak could not be reached in time or answered 5xx: counts toward the breaker.
 * Also used when no call was attempted at all (circuit open, Keycloak disabled).
 */
export class KeycloakUnavailable extends GatehouseError {
  readonly kind: UnavailableKind | 'circuit_open' | 'disabled'
  readonly server: string | undefined

  constructor (kind: UnavailableKind | 'circuit_open' | 'disabled', message: string, options: GatehouseErrorOptions & { server?: string } = {}) {
    const code: ErrorCode = kind === 'circuit_open'
      ? 'ERR_KEYCLOAK_CIRCUIT_OPEN'
      : kind === 'disabled'
        ? 'ERR_KEYCLOAK_DISABLED'
        : kind === 'bad_response' ? 'ERR_KEYCLOAK_BAD_RESPONSE' : 'ERR_KEYCLOAK_UNAVAILABLE'
    super(code, message, { statusCode: 503, ...options })
    this.kind = kind
    this.server = options.server
  }
}

/** Keycloak answered, and said no (4xx): never counts toward the breaker. */
export class KeycloakRejected extends GatehouseError {
  readonly status: number
  /** The OAuth `error` member of the answer, when it had one (`invalid_grant`…). */
  readonly oauthError: string | undefined
  readonly server: string | undefined

  constructor (status: number, message: string, options: GatehouseErrorOptions & { oauthError?: string, server?: string } = {}) {
    super('ERR_KEYCLOAK_REJECTED', message, options)
    this.status = status
    this.oauthError = options.oauthError
    this.server = options.server
  }
}

/** A request path that cannot be normalised safely (DESIGN §2 step 1): a 400. */
export class PathError extends GatehouseError {
  constructor (message: string) {
    super('ERR_PATH_INVALID', message, { statusCode: 400 })
  }
}

/** Wrong command-line usage: exit code 2 with the message. */
export class UsageError extends GatehouseError {
  constructor (message: string) {
    super('ERR_CLI_USAGE', message)
  }
}

/** Something only Keycloak's Admin API can do, asked of a generic OpenID provider: exit code 1. */
export class NotKeycloakError extends GatehouseError {
  constructor (what: string) {
    super('ERR_PROVIDER_NOT_KEYCLOAK', `${what} needs Keycloak's Admin API, and keycloak.provider is generic`)
  }
}

/** A service-token operation that cannot be done (`gatehouse tokens …`, automatic rotation): exit code 1. */
export class ServiceTokenError extends GatehouseError {
  constructor (code: 'ERR_SERVICE_TOKEN_EXISTS' | 'ERR_SERVICE_TOKEN_NOT_FOUND' | 'ERR_SERVICE_TOKEN_REVOKED' | 'ERR_SERVICE_TOKEN_CONFLICT' | 'ERR_SERVICE_TOKEN_DELIVERY' | 'ERR_SERVICE_TOKEN_REDIS_UNAVAILABLE', message: string, options: GatehouseErrorOptions = {}) {
    super(code, message, options)
  }
}
