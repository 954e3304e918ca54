import { fileURLToPath } from 'node:url'
import type { ServiceDefinition } from '@grpc/grpc-js'
import { loadSync, type Options } from '@grpc/proto-loader'

/**
 * The repository's `proto/` directory: beside `src/` in a checkout and beside `dist/` in a
 * build (the Dockerfile copies it there), so the same relative path finds it from both.
 */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url))

/** Fully qualified name of Envoy's authorization service. */
export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization'

/** Fully qualified name of the gRPC health service. */
export const HEALTH_SERVICE = 'grpc.health.v1.Health'

/**
 * How messages become objects: field names as the .proto spells them (`header_map`,
 * `headers_to_remove`), enums by name, absent fields left absent (no defaults filled in),
 * `bytes` as Buffers. Tests load the protos with the same options.
 */
export const PROTO_OPTIONS: Options = Object.freeze({ keepCase: true, longs: String, enums: String, defaults: false, oneofs: false, includeDirs: [PROTO_DIR] })

/** A `CheckRequest` that could not be decoded: handed to the handler instead of an exception. */
export const UNDECODABLE: unique symbol = Symbol('undecodable CheckRequest')

/** The fields of an `envoy.service.auth.v3.CheckRequest` Gatehouse reads (proto/envoy/service/auth/v3/). */
export interface CheckRequest {
  attributes?: {
    source?: { address?: { socket_address?: { address?: string } } }
    request?: { http?: HttpRequestAttributes }
  }
}

/** `AttributeContext.HttpRequest`, as far as Gatehouse reads it. */
export interface HttpRequestAttributes {
  id?: string
  method?: string
  /** Lower-case names, pseudo-headers included, repeated headers joined with commas. */
  headers?: Record<string, string>
  path?: string
  host?: string
  scheme?: string
  /** Sent instead of `headers` with Envoy's `encode_raw_headers`: one entry per header. */
  header_map?: { headers?: Array<{ key?: string, value?: string, raw_value?: Buffer }> }
}

/** A `config.core.v3.HeaderValueOption` as Gatehouse sends it. */
export interface HeaderValueOption {
  header: { key: string, value: string }
  append_action: 'OVERWRITE_IF_EXISTS_OR_ADD'
}

/** An `envoy.service.auth.v3.CheckResponse` as Gatehouse sends it. */
export interface CheckResponse {
  status: { code: number }
  ok_response?: { headers: readonly HeaderValueOption[], headers_to_remove: readonly string[] }
  denied_response?: { status: { code: number }, headers: readonly HeaderValueOption[], body: string }
}

/** The two services, ready for `server.addService`. */
export interface GrpcServices {
  /**
   * `Check`'s request deserializer never throws: an undecodable message arrives as
   * {@link UNDECODABLE}. Its response serializer passes a Buffer through as already encoded.
   */
  authorization: ServiceDefinition
  health: ServiceDefinition
  /** Encodes a CheckResponse with the repository's protos. */
  encodeCheckResponse: (response: CheckResponse) => Buffer
}

/**
 * Reads the .proto files, once per listener at start-up: the per-call path then only runs the
 * encoders and decoders protobufjs generated from them.
 */
export function loadGrpcServices (): GrpcServices {
  const definitions = loadSync(['envoy/service/auth/v3/external_auth.proto', 'grpc/health/v1/health.proto'], PROTO_OPTIONS)
  const authorization = definitions[AUTHORIZATION_SERVICE] as ServiceDefinition
  const health = definitions[HEALTH_SERVICE] as ServiceDefinition
  const check = authorization.Check
  if (check === undefined || health.Check === undefined) throw new TypeError(`${PROTO_DIR} does not define ${AUTHORIZATION_SERVICE}/Check and ${HEALTH_SERVICE}/Check`)
  const decode = check.requestDeserialize
  // grpc-js answers a deserializer's exception with INTERNAL; bytes that are not a
  // CheckRequest are the caller's mistake, which the handler answers INVALID_ARGUMENT.
  const forgiving = (bytes: Buffer): unknown => {
    try {
      return decode(bytes)
    } catch {
      return UNDECODABLE
    }
  }
  const encode = check.responseSerialize as (response: CheckResponse) => Buffer
  // A response the handler encoded once and keeps (an allowed token's) is sent as it is.
  const encodeUnlessEncoded = (response: CheckResponse | Buffer): Buffer => Buffer.isBuffer(response) ? response : encode(response)
  return {
    authorization: { ...authorization, Check: { ...check, requestDeserialize: forgiving, responseSerialize: encodeUnlessEncoded } },
    health,
    encodeCheckResponse: encode
  }
}
