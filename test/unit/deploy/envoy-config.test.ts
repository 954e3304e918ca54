import t from 'tap'
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { DEFAULT_GRPC_PORT, DEFAULT_HEADERS, DEFAULT_KEYCLOAK_TIMEOUT_MS, DEFAULT_PREFIX, DEFAULT_SERVER_PORT } from '../../../src/config/schema.ts'
import { durationSeconds, findingsOf, isObject, type FieldTables, type MessageSpec } from './field-table.ts'

// No Envoy binary runs on these machines, so deploy/envoy/*.yaml are checked here: parsed,
// every field they use looked up in a table of Envoy's field names, and the settings Gatehouse
// depends on asserted one by one.
//
// The ext_authz tables are protocol-facts §A/§B, field for field (§A.1 lists every ExtAuthz
// field, so all of them are allowed; the deprecated AuthorizationRequest.allowed_headers is
// left out on purpose: ExtAuthz.allowed_headers replaced it). The rest of a bootstrap
// (listener, connection manager, routes, clusters) is not in protocol-facts: those tables hold
// only the fields these files use, each checked against the proto file named, in
// envoyproxy/data-plane-api at 84e84367 (the snapshot protocol-facts was written from). A
// field not in a table is a finding: add it, from its source, before using it.

const FACTS = 'protocol-facts'
const DPA = (file: string): string => `data-plane-api@84e84367 ${file}`

// envoy.type.v3.StatusCode names protocol-facts §B.2 lists, with their codes.
const STATUS_CODES: Record<string, number> = {
  Continue: 100, OK: 200, Created: 201, Accepted: 202, NoContent: 204, MovedPermanently: 301, Found: 302, SeeOther: 303,
  NotModified: 304, TemporaryRedirect: 307, PermanentRedirect: 308, BadRequest: 400, Unauthorized: 401, PaymentRequired: 402,
  Forbidden: 403, NotFound: 404, MethodNotAllowed: 405, Conflict: 409, TooManyRequests: 429, InternalServerError: 500,
  NotImplemented: 501, BadGateway: 502, ServiceUnavailable: 503, GatewayTimeout: 504
}

const EXT_AUTHZ: Record<string, MessageSpec> = {
  ExtAuthz: {
    source: `${FACTS} §A.1`,
    fields: {
      grpc_service: 'GrpcService',
      http_service: 'HttpService',
      failure_mode_allow: 'bool',
      with_request_body: 'BufferSettings',
      clear_route_cache: 'bool',
      status_on_error: 'HttpStatus',
      metadata_context_namespaces: 'string[]',
      filter_enabled: 'unchecked',
      include_peer_certificate: 'bool',
      deny_at_disable: 'unchecked',
      transport_api_version: 'enum:AUTO|V2|V3',
      stat_prefix: 'string',
      allowed_headers: 'ListStringMatcher',
      include_tls_session: 'bool',
      failure_mode_allow_header_add: 'bool',
      charge_cluster_response_stats: 'bool',
      route_metadata_context_namespaces: 'string[]',
      encode_raw_headers: 'bool',
      validate_mutations: 'bool',
      disallowed_headers: 'ListStringMatcher',
      decoder_header_mutation_rules: 'unchecked',
      enable_dynamic_metadata_ingestion: 'bool',
      max_denied_response_body_bytes: 'uint32',
      enforce_response_header_limits: 'bool'
    }
  },
  BufferSettings: { source: `${FACTS} §A.1`, fields: { max_request_bytes: 'uint32', allow_partial_message: 'bool', pack_as_bytes: 'bool' } },
  HttpService: {
    source: `${FACTS} §A.1`,
    fields: { server_uri: 'HttpUri', path_prefix: 'string', authorization_request: 'AuthorizationRequest', authorization_response: 'AuthorizationResponse', retry_policy: 'unchecked' }
  },
  HttpUri: { source: `${FACTS} §A.1`, fields: { uri: 'string', cluster: 'string', timeout: 'duration' } },
  AuthorizationRequest: { source: `${FACTS} §A.1 (allowed_headers, deprecated, left out)`, fields: { headers_to_add: 'HeaderValue[]' } },
  AuthorizationResponse: {
    source: `${FACTS} §A.1`,
    fields: {
      allowed_upstream_headers: 'ListStringMatcher',
      allowed_client_headers: 'ListStringMatcher',
      allowed_upstream_headers_to_append: 'ListStringMatcher',
      allowed_client_headers_on_success: 'ListStringMatcher',
      dynamic_metadata_from_headers: 'ListStringMatcher'
    }
  },
  ExtAuthzPerRoute: { source: `${FACTS} §A.1`, fields: { disabled: 'bool', check_settings: 'CheckSettings' } },
  CheckSettings: {
    source: `${FACTS} §A.1`,
    fields: { context_extensions: 'map:string', disable_request_body_buffering: 'bool', with_request_body: 'BufferSettings', grpc_service: 'GrpcService', http_service: 'HttpService' }
  },
  GrpcService: { source: `${FACTS} §A.4`, fields: { envoy_grpc: 'EnvoyGrpc', timeout: 'duration' } },
  EnvoyGrpc: { source: `${FACTS} §A.4`, fields: { cluster_name: 'string' } },
  HttpStatus: { source: `${FACTS} §B.2`, fields: { code: `enum:${Object.keys(STATUS_CODES).join('|')}` } },
  HeaderValue: { source: `${FACTS} §B.2`, fields: { key: 'string', value: 'string', raw_value: 'string' } },
  ListStringMatcher: { source: `${FACTS} §A.4`, fields: { patterns: 'StringMatcher[]' } },
  StringMatcher: { source: `${FACTS} §A.4`, fields: { exact: 'string', prefix: 'string' } },
  UpstreamHttpProtocolOptions: { source: `${FACTS} §A.4`, fields: { explicit_http_config: 'ExplicitHttpConfig' } },
  ExplicitHttpConfig: { source: `${FACTS} §A.4`, fields: { http2_protocol_options: 'object' } }
}

const BOOTSTRAP: Record<string, MessageSpec> = {
  Bootstrap: { source: DPA('envoy/config/bootstrap/v3/bootstrap.proto'), fields: { static_resources: 'StaticResources', admin: 'Admin' } },
  StaticResources: { source: DPA('envoy/config/bootstrap/v3/bootstrap.proto'), fields: { listeners: 'Listener[]', clusters: 'Cluster[]' } },
  Admin: { source: DPA('envoy/config/bootstrap/v3/bootstrap.proto'), fields: { address: 'Address' } },
  Listener: { source: DPA('envoy/config/listener/v3/listener.proto'), fields: { name: 'string', address: 'Address', filter_chains: 'FilterChain[]' } },
  FilterChain: { source: DPA('envoy/config/listener/v3/listener_components.proto'), fields: { filters: 'Filter[]' } },
  Filter: { source: DPA('envoy/config/listener/v3/listener_components.proto'), fields: { name: 'string', typed_config: 'any' } },
  Address: { source: DPA('envoy/config/core/v3/address.proto'), fields: { socket_address: 'SocketAddress' } },
  SocketAddress: { source: DPA('envoy/config/core/v3/address.proto'), fields: { address: 'string', port_value: 'uint32' } },
  HttpConnectionManager: {
    source: DPA('envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto'),
    fields: {
      stat_prefix: 'string',
      codec_type: 'enum:AUTO|HTTP1|HTTP2|HTTP3',
      use_remote_address: 'bool',
      normalize_path: 'bool',
      merge_slashes: 'bool',
      route_config: 'RouteConfiguration',
      http_filters: 'HttpFilter[]'
    }
  },
  HttpFilter: { source: DPA('envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto'), fields: { name: 'string', typed_config: 'any' } },
  Router: { source: DPA('envoy/extensions/filters/http/router/v3/router.proto'), fields: {} },
  RouteConfiguration: { source: DPA('envoy/config/route/v3/route.proto'), fields: { name: 'string', virtual_hosts: 'VirtualHost[]' } },
  VirtualHost: { source: DPA('envoy/config/route/v3/route_components.proto'), fields: { name: 'string', domains: 'string[]', routes: 'Route[]' } },
  Route: { source: DPA('envoy/config/route/v3/route_components.proto'), fields: { name: 'string', match: 'RouteMatch', route: 'RouteAction', typed_per_filter_config: 'map:any' } },
  RouteMatch: { source: DPA('envoy/config/route/v3/route_components.proto'), fields: { prefix: 'string', path: 'string' } },
  RouteAction: { source: DPA('envoy/config/route/v3/route_components.proto'), fields: { cluster: 'string', timeout: 'duration' } },
  Cluster: {
    source: DPA('envoy/config/cluster/v3/cluster.proto'),
    fields: {
      name: 'string',
      type: 'enum:STATIC|STRICT_DNS|LOGICAL_DNS|EDS',
      connect_timeout: 'duration',
      load_assignment: 'ClusterLoadAssignment',
      typed_extension_protocol_options: 'map:any',
      health_checks: 'HealthCheck[]'
    }
  },
  ClusterLoadAssignment: { source: DPA('envoy/config/endpoint/v3/endpoint.proto'), fields: { cluster_name: 'string', endpoints: 'LocalityLbEndpoints[]' } },
  LocalityLbEndpoints: { source: DPA('envoy/config/endpoint/v3/endpoint_components.proto'), fields: { lb_endpoints: 'LbEndpoint[]' } },
  LbEndpoint: { source: DPA('envoy/config/endpoint/v3/endpoint_components.proto'), fields: { endpoint: 'Endpoint' } },
  Endpoint: { source: DPA('envoy/config/endpoint/v3/endpoint_components.proto'), fields: { address: 'Address' } },
  HealthCheck: {
    source: DPA('envoy/config/core/v3/health_check.proto'),
    fields: { timeout: 'duration', interval: 'duration', unhealthy_threshold: 'uint32', healthy_threshold: 'uint32', grpc_health_check: 'GrpcHealthCheck' }
  },
  GrpcHealthCheck: { source: DPA('envoy/config/core/v3/health_check.proto'), fields: { service_name: 'string', authority: 'string' } }
}

const EXT_AUTHZ_URL = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz'
const PER_ROUTE_URL = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute'
const TABLES: FieldTables = {
  messages: { ...EXT_AUTHZ, ...BOOTSTRAP },
  typeUrls: {
    'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager': 'HttpConnectionManager',
    [EXT_AUTHZ_URL]: 'ExtAuthz',
    [PER_ROUTE_URL]: 'ExtAuthzPerRoute',
    'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router': 'Router',
    'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions': 'UpstreamHttpProtocolOptions'
  }
}

const EXT_AUTHZ_FILTER = 'envoy.filters.http.ext_authz'
const IDENTITY_HEADERS = Object.values(DEFAULT_HEADERS).map((name) => name.toLowerCase()).sort()

type Yaml = Record<string, unknown>

function load (name: string): Yaml {
  const value: unknown = parse(readFileSync(new URL(`../../../deploy/envoy/${name}`, import.meta.url), 'utf8'))
  if (!isObject(value)) throw new Error(`${name} is not a mapping`)
  return value
}

/** `value[k1][k2]...`, or undefined as soon as a step is missing. */
function at (value: unknown, ...keys: Array<string | number>): unknown {
  let current = value
  for (const key of keys) {
    if (!isObject(current) && !Array.isArray(current)) return undefined
    current = (current as Record<string | number, unknown>)[key]
  }
  return current
}

const list = (value: unknown): unknown[] => Array.isArray(value) ? value : []

/** The one connection manager of the one listener. */
function connectionManager (bootstrap: Yaml): Yaml {
  const hcm = at(bootstrap, 'static_resources', 'listeners', 0, 'filter_chains', 0, 'filters', 0, 'typed_config')
  if (!isObject(hcm)) throw new Error('no connection manager')
  return hcm
}

function extAuthzOf (bootstrap: Yaml): Yaml {
  const filter = list(connectionManager(bootstrap).http_filters).find((f) => at(f, 'name') === EXT_AUTHZ_FILTER)
  const config = at(filter, 'typed_config')
  if (!isObject(config)) throw new Error('no ext_authz filter')
  return config
}

function cluster (bootstrap: Yaml, name: unknown): Yaml | undefined {
  const found = list(at(bootstrap, 'static_resources', 'clusters')).find((c) => at(c, 'name') === name)
  return isObject(found) ? found : undefined
}

const portOf = (c: Yaml | undefined): unknown => at(c, 'load_assignment', 'endpoints', 0, 'lb_endpoints', 0, 'endpoint', 'address', 'socket_address', 'port_value')

const patterns = (matcher: unknown, kind: 'exact' | 'prefix'): string[] =>
  list(at(matcher, 'patterns')).map((p) => at(p, kind)).filter((v): v is string => typeof v === 'string')

const FILES = ['envoy-http.yaml', 'envoy-grpc.yaml'] as const

for (const file of FILES) {
  t.test(`${file}: every field it uses is one Envoy has`, async (t) => {
    const findings = findingsOf(TABLES, load(file), 'Bootstrap')
    t.same(findings, [], findings.join('\n'))
  })

  t.test(`${file}: the ext_authz filter fails closed, within a deadline above Keycloak's, and sees what Gatehouse decides on`, async (t) => {
    const bootstrap = load(file)
    const filters = list(connectionManager(bootstrap).http_filters)
    t.same(filters.map((f) => at(f, 'name')), [EXT_AUTHZ_FILTER, 'envoy.filters.http.router'], 'one check, before the router (which must be last)')
    const config = extAuthzOf(bootstrap)
    t.equal(config['@type'], EXT_AUTHZ_URL)
    t.equal(config.transport_api_version, 'V3')
    t.equal(config.failure_mode_allow, false, 'written out, and false: an unreachable Gatehouse denies')
    t.equal(config.include_peer_certificate, false, 'written out, and false')
    const onError = STATUS_CODES[String(at(config, 'status_on_error', 'code'))]
    t.ok(onError !== undefined && onError >= 500, `status_on_error is a 5xx (${String(onError)}), so an outage is not a "forbidden"`)

    const timeout = file === 'envoy-http.yaml' ? at(config, 'http_service', 'server_uri', 'timeout') : at(config, 'grpc_service', 'timeout')
    const seconds = typeof timeout === 'string' ? durationSeconds(timeout) : null
    t.ok(seconds !== null && seconds * 1000 > DEFAULT_KEYCLOAK_TIMEOUT_MS, `the check timeout (${String(timeout)}) is above keycloak.timeout_ms (${DEFAULT_KEYCLOAK_TIMEOUT_MS} ms)`)

    const exact = patterns(config.allowed_headers, 'exact')
    for (const header of ['authorization', 'cookie', 'accept', 'x-forwarded-proto', 'x-request-id']) t.ok(exact.includes(header), `allowed_headers includes ${header}`)
    t.same(patterns(config.allowed_headers, 'prefix').sort(), ['x-auth-request-', 'x_auth_request_'], 'forged identity headers reach Gatehouse, so it can name them for removal')
  })

  t.test(`${file}: ${DEFAULT_PREFIX}/ goes to Gatehouse's HTTP listener without the check, before the app's catch-all`, async (t) => {
    const bootstrap = load(file)
    const routes = list(at(connectionManager(bootstrap), 'route_config', 'virtual_hosts', 0, 'routes'))
    t.same(routes.map((r) => at(r, 'match', 'prefix')), [`${DEFAULT_PREFIX}/`, '/'], 'Envoy takes the first route that matches')
    const [own, app] = routes
    t.same(at(own, 'typed_per_filter_config', EXT_AUTHZ_FILTER), { '@type': PER_ROUTE_URL, disabled: true })
    t.equal(portOf(cluster(bootstrap, at(own, 'route', 'cluster'))), DEFAULT_SERVER_PORT)
    t.equal(at(app, 'typed_per_filter_config'), undefined, 'the app keeps the check')
    for (const route of routes) t.ok(cluster(bootstrap, at(route, 'route', 'cluster')), `route ${String(at(route, 'name'))} names a cluster that exists`)
    for (const c of list(at(bootstrap, 'static_resources', 'clusters'))) t.equal(at(c, 'load_assignment', 'cluster_name'), at(c, 'name'))
  })
}

t.test('envoy-http.yaml: checks go to Gatehouse at /_gatehouse/ext-authz, identity headers reach the app, denials reach the client', async (t) => {
  const bootstrap = load('envoy-http.yaml')
  const service = at(extAuthzOf(bootstrap), 'http_service')
  t.equal(at(service, 'path_prefix'), `${DEFAULT_PREFIX}/ext-authz`)
  t.equal(portOf(cluster(bootstrap, at(service, 'server_uri', 'cluster'))), DEFAULT_SERVER_PORT)
  const response = at(service, 'authorization_response')
  t.same(patterns(at(response, 'allowed_upstream_headers'), 'exact').sort(), IDENTITY_HEADERS, 'every identity header Gatehouse sets, and nothing else')
  t.same(patterns(at(response, 'allowed_upstream_headers'), 'prefix'), [], 'no prefix: a header Gatehouse did not mean for the app never gets there')
  const client = patterns(at(response, 'allowed_client_headers'), 'exact')
  for (const header of ['set-cookie', 'location', 'www-authenticate']) t.ok(client.includes(header), `allowed_client_headers includes ${header}`)
})

t.test('envoy-grpc.yaml: checks go over HTTP/2 to Gatehouse\'s gRPC listener, which Envoy health-checks', async (t) => {
  const bootstrap = load('envoy-grpc.yaml')
  const config = extAuthzOf(bootstrap)
  t.equal(config.http_service, undefined, 'grpc_service and http_service are one oneof')
  const grpc = cluster(bootstrap, at(config, 'grpc_service', 'envoy_grpc', 'cluster_name'))
  t.equal(portOf(grpc), DEFAULT_GRPC_PORT)
  t.same(at(grpc, 'typed_extension_protocol_options', 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'), {
    '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
    explicit_http_config: { http2_protocol_options: {} }
  })
  t.same(at(grpc, 'health_checks', 0, 'grpc_health_check'), {}, 'grpc.health.v1.Health, overall server status')
})

t.test('the field check reports a misspelt field, a deprecated one, a wrong enum value and an unknown type', async (t) => {
  const bootstrap = load('envoy-http.yaml')
  const config = extAuthzOf(bootstrap)
  const broken = structuredClone(bootstrap)
  const brokenConfig = extAuthzOf(broken)
  delete brokenConfig.failure_mode_allow
  brokenConfig.failure_mode_alow = false
  brokenConfig.transport_api_version = 'v3'
  ;(brokenConfig.http_service as Yaml).authorization_request = { allowed_headers: at(config, 'allowed_headers') }
  ;(list(connectionManager(broken).http_filters)[1] as Yaml).typed_config = { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr' }
  const at0 = '$.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters'
  t.same(findingsOf(TABLES, broken, 'Bootstrap'), [
    `${at0}[0].typed_config.transport_api_version: "v3" is not one of AUTO, V2, V3`,
    `${at0}[0].typed_config.http_service.authorization_request.allowed_headers: not a field of AuthorizationRequest (protocol-facts §A.1 (allowed_headers, deprecated, left out))`,
    `${at0}[0].typed_config.failure_mode_alow: not a field of ExtAuthz (protocol-facts §A.1)`,
    `${at0}[1].typed_config.@type: unknown type "type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr"`
  ])
})
