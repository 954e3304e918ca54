import { Type, type Static, type TSchema } from '@sinclair/typebox'

/*
 * The configuration schema: one TypeBox schema gives the static type and the Ajv validator
 * (HOUSE-STYLE §3). Keys are snake_case end to end so errors, docs and YAML show one path.
 * Every object is closed (`additionalProperties: false`) so a misspelt key stops start-up.
 * `x-secret` marks values `config show` redacts; `x-expected` words an expectation for people.
 */

export const DEFAULT_SERVER_HOST = '0.0.0.0'
export const DEFAULT_SERVER_PORT = 4180
export const DEFAULT_PREFIX = '/_gatehouse'
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000
export const DEFAULT_ADMIN_HOST = '127.0.0.1'
export const DEFAULT_ADMIN_PORT = 9180
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 30_000
export const DEFAULT_UPSTREAM_CONNECTIONS = 128
export const DEFAULT_UPSTREAM_KEEP_ALIVE_MS = 60_000
export const DEFAULT_KEYCLOAK_TIMEOUT_MS = 2000
export const DEFAULT_FAILURE_THRESHOLD = 3
export const DEFAULT_COOLDOWN_SECONDS = 60
export const DEFAULT_TOKEN_GRACE_PERIOD_HOURS = 24
export const DEFAULT_HEALTH_CHECK_CACHE_SECONDS = 30
export const DEFAULT_HA_STRATEGY = 'priority'
export const DEFAULT_SERVER_PRIORITY = 1
export const DEFAULT_SERVER_WEIGHT = 100
export const DEFAULT_JWKS_REFRESH_INTERVAL_SECONDS = 300
export const DEFAULT_AUTH_PRIMARY = 'keycloak'
export const DEFAULT_SESSION_COOKIE = 'gatehouse_session'
export const DEFAULT_IDLE_TIMEOUT_MINUTES = 60
export const DEFAULT_ABSOLUTE_TIMEOUT_HOURS = 12
export const DEFAULT_REFRESH_WINDOW_SECONDS = 60
export const DEFAULT_TOUCH_INTERVAL_SECONDS = 30
export const DEFAULT_SESSION_CACHE_MAX_ENTRIES = 10_000
export const DEFAULT_CACHED_CREDENTIALS_DAYS = 30
export const DEFAULT_PASSWORD_MIN_LENGTH = 12
export const DEFAULT_MAX_FAILED_ATTEMPTS = 5
export const DEFAULT_WINDOW_MINUTES = 15
export const DEFAULT_LOCKOUT_MINUTES = 15
export const DEFAULT_JWKS_MIN_REFRESH_INTERVAL_SECONDS = 10
export const DEFAULT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const
export const DEFAULT_CLOCK_SKEW_SECONDS = 30
export const DEFAULT_TOKEN_CACHE_MAX_ENTRIES = 10_000
export const DEFAULT_POLICIES_DIR = './policies'
export const DEFAULT_POLICY = 'authenticated'
export const DEFAULT_POLICY_RELOAD_DEBOUNCE_MS = 250
export const DEFAULT_DATABASE_PATH = './data/gatehouse.db'
export const DEFAULT_BUSY_TIMEOUT_MS = 5000
export const DEFAULT_LOG_LEVEL = 'info'
export const DEFAULT_HEADERS = {
  user: 'X-Auth-Request-User',
  preferred_username: 'X-Auth-Request-Preferred-Username',
  email: 'X-Auth-Request-Email',
  groups: 'X-Auth-Request-Groups',
  roles: 'X-Auth-Request-Roles',
  permissions: 'X-Auth-Request-Permissions',
  mode: 'X-Auth-Request-Mode',
  access_token: 'X-Auth-Request-Access-Token'
} as const

/** The only families jose may verify with against a JWKS: asymmetric, never `none` or HMAC. */
export const ASYMMETRIC_ALGORITHMS = DEFAULT_ALGORITHMS

const Port = (fallback: number, description: string) =>
  Type.Integer({ minimum: 0, maximum: 65535, default: fallback, description })

const HttpUrl = (description: string, extra: Record<string, unknown> = {}) =>
  Type.String({ pattern: '^https?://[^\\s/?#]+[^\\s]*$', 'x-expected': 'an http:// or https:// URL', description, ...extra })

const HeaderName = (fallback: string, description: string) =>
  Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', 'x-expected': 'an HTTP header name', default: fallback, description })

const Secret = (description: string) => Type.String({ minLength: 1, 'x-secret': true, description })

/** Most `server.workers`: beyond this a sidecar is no longer a sidecar. */
export const MAX_WORKERS = 64

export const ServerSchema = Type.Object({
  host: Type.String({ minLength: 1, default: DEFAULT_SERVER_HOST, description: `Address the proxy listener binds. Default is ${DEFAULT_SERVER_HOST}.` }),
  port: Port(DEFAULT_SERVER_PORT, `Port of the proxy listener (0 picks a free one). Default is ${DEFAULT_SERVER_PORT}.`),
  prefix: Type.String({
    pattern: '^(/[A-Za-z0-9._~-]+)+$',
    'x-expected': 'a path such as /_gatehouse (no trailing slash)',
    default: DEFAULT_PREFIX,
    description: `Path under which Gatehouse's own routes live; never proxied. Default is ${DEFAULT_PREFIX}.`
  }),
  trust_proxy: Type.Union([Type.Boolean(), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], {
    default: false,
    'x-expected': 'true, false, or a list of addresses/CIDR ranges',
    description: 'Whether X-Forwarded-For/Proto/Host sent by the peer are believed: false (the peer is the client), true (any peer), or a list of trusted proxies, each an IP address, a CIDR range (`10.0.0.0/8`, `fd00::/8`, prefix 1 to 32 or 128), an IPv4 address/netmask, or `loopback`, `linklocal` or `uniquelocal` (checked by `config validate`). Default is false.'
  }),
  shutdown_timeout_ms: Type.Integer({ minimum: 0, default: DEFAULT_SHUTDOWN_TIMEOUT_MS, description: `On SIGTERM/SIGINT, how long in-flight requests may finish before connections are cut, in milliseconds. Default is ${DEFAULT_SHUTDOWN_TIMEOUT_MS} (10 seconds).` }),
  workers: Type.Integer({
    minimum: 1,
    maximum: MAX_WORKERS,
    default: 1,
    description: `How many worker processes serve the listeners (Node's cluster module: one port, connections spread over the workers). Each has its own caches; they share the SQLite file (WAL), and a change made by one (a logout, a revocation) reaches the others at their next request, through SQLite's change counter. The first worker alone runs the sync queue's periodic replay. Use up to one per core the sidecar may have; 1 to ${MAX_WORKERS}. Default is 1 (one process, no cluster).`
  }),
  public_url: Type.Optional(HttpUrl('The URL browsers use to reach the app through Gatehouse (`https://app.example.com`): the OIDC redirect URI and logout return address are built from it. Default is the scheme and Host of each request (as trust_proxy allows); set it in production.'))
}, { additionalProperties: false, default: {}, description: 'The proxy listener.' })

export const DEFAULT_DASHBOARD_REFRESH_SECONDS = 10

export const AdminSchema = Type.Object({
  host: Type.String({ minLength: 1, default: DEFAULT_ADMIN_HOST, description: `Address the admin listener (metrics, health, status) binds. Default is ${DEFAULT_ADMIN_HOST}: keep it off public interfaces.` }),
  port: Port(DEFAULT_ADMIN_PORT, `Port of the admin listener (0 picks a free one). Default is ${DEFAULT_ADMIN_PORT}.`),
  dashboard_refresh_seconds: Type.Integer({ minimum: 1, maximum: 3600, default: DEFAULT_DASHBOARD_REFRESH_SECONDS, description: `How often /status.html reloads itself, in seconds. Default is ${DEFAULT_DASHBOARD_REFRESH_SECONDS}.` })
}, { additionalProperties: false, default: {}, description: 'The admin listener: never proxied, never behind authentication.' })

export const DEFAULT_GRPC_HOST = '0.0.0.0'
export const DEFAULT_GRPC_PORT = 9191
export const DEFAULT_GRPC_MAX_MESSAGE_BYTES = 64 * 1024

export const GrpcSchema = Type.Object({
  enabled: Type.Boolean({ default: false, description: 'Serve Envoy\'s gRPC ext_authz (envoy.service.auth.v3.Authorization/Check) and grpc.health.v1.Health on a listener of its own. Default is false.' }),
  host: Type.String({ minLength: 1, default: DEFAULT_GRPC_HOST, description: `Address the gRPC listener binds. Default is ${DEFAULT_GRPC_HOST}.` }),
  port: Port(DEFAULT_GRPC_PORT, `Port of the gRPC listener (0 picks a free one). Default is ${DEFAULT_GRPC_PORT}.`),
  max_message_bytes: Type.Integer({ minimum: 1024, maximum: 4 * 1024 * 1024, default: DEFAULT_GRPC_MAX_MESSAGE_BYTES, description: `Largest CheckRequest accepted, in bytes; a larger one is refused with RESOURCE_EXHAUSTED before it is decoded. Default is ${DEFAULT_GRPC_MAX_MESSAGE_BYTES} (64 KiB).` })
}, { additionalProperties: false, default: {}, description: 'The gRPC ext_authz listener (Envoy).' })

export const ExtAuthzSchema = Type.Object({
  redirect_browsers: Type.Boolean({ default: true, description: 'Envoy ext_authz (HTTP and gRPC): a browser page load without credentials is denied with a 302 to the login page (route `server.prefix` to Gatehouse, without the check, for it to work); false answers 401 like any other request. Default is true.' })
}, { additionalProperties: false, default: {}, description: 'Envoy ext_authz (HTTP service at `{prefix}/ext-authz`, and gRPC).' })

export const ForwardAuthSchema = Type.Object({
  trusted_proxies: Type.Array(Type.String({ minLength: 1 }), {
    default: ['loopback'],
    'x-expected': 'a list of addresses/CIDR ranges',
    description: 'Peers whose X-Original-URI/-Method (nginx) and X-Forwarded-Method/-Proto/-Host/-Uri (Traefik) describe the request to decide on at `{prefix}/auth`: each an IP address, a CIDR range, an IPv4 address/netmask, or `loopback`, `linklocal` or `uniquelocal`. From any other peer those headers are ignored and the request itself is decided on. Default is [loopback].'
  })
}, { additionalProperties: false, default: {}, description: 'nginx auth_request and Traefik ForwardAuth at `{prefix}/auth` (and `{prefix}/start`).' })

export const UpstreamSchema = Type.Object({
  url: HttpUrl('Base URL of the protected app. Required.'),
  timeout_ms: Type.Integer({ minimum: 1, default: DEFAULT_UPSTREAM_TIMEOUT_MS, description: `How long to wait for the app's response headers before answering 504, and the longest pause allowed inside a response body, in milliseconds. Default is ${DEFAULT_UPSTREAM_TIMEOUT_MS} (30 seconds).` }),
  connections: Type.Integer({ minimum: 1, default: DEFAULT_UPSTREAM_CONNECTIONS, description: `Size of the keep-alive connection pool to the app. Default is ${DEFAULT_UPSTREAM_CONNECTIONS}.` }),
  keep_alive_ms: Type.Integer({ minimum: 1, default: DEFAULT_UPSTREAM_KEEP_ALIVE_MS, description: `How long an idle pooled connection to the app is kept, in milliseconds. Default is ${DEFAULT_UPSTREAM_KEEP_ALIVE_MS} (60 seconds).` }),
  pass_host_header: Type.Boolean({ default: true, description: 'Send the client\'s Host header to the app (true) or the upstream URL\'s host (false). Default is true.' }),
  websocket: Type.Boolean({ default: true, description: 'Proxy WebSocket upgrades (after the same decision as any request). Default is true.' })
}, { additionalProperties: false, description: 'The app Gatehouse protects.' })

export const JwksSchema = Type.Object({
  refresh_interval_seconds: Type.Integer({ minimum: 1, default: DEFAULT_JWKS_REFRESH_INTERVAL_SECONDS, description: `How often the JWKS is refreshed in the background, in seconds. Default is ${DEFAULT_JWKS_REFRESH_INTERVAL_SECONDS} (5 minutes).` }),
  min_refresh_interval_seconds: Type.Integer({ minimum: 0, default: DEFAULT_JWKS_MIN_REFRESH_INTERVAL_SECONDS, description: `A token with an unknown key id triggers at most one JWKS refresh per this many seconds. Default is ${DEFAULT_JWKS_MIN_REFRESH_INTERVAL_SECONDS}.` })
}, { additionalProperties: false, default: {}, description: 'The realm\'s signing keys, kept in SQLite so Gatehouse starts and validates tokens while Keycloak is down.' })

export const ResilienceSchema = Type.Object({
  enabled: Type.Boolean({ default: true, description: 'Circuit breakers on: a failing server is skipped until its cooldown passes. When false every call still has its deadline but circuits never open. Default is true.' }),
  failure_threshold: Type.Integer({ minimum: 1, default: DEFAULT_FAILURE_THRESHOLD, description: `Consecutive failures (timeouts, refused or reset connections, 5xx; never 4xx) that open a server's circuit. Default is ${DEFAULT_FAILURE_THRESHOLD}.` }),
  cooldown_seconds: Type.Integer({ minimum: 1, default: DEFAULT_COOLDOWN_SECONDS, description: `How long an open circuit waits before one probe may test the server again, in seconds. Default is ${DEFAULT_COOLDOWN_SECONDS}.` }),
  token_grace_period_hours: Type.Number({ exclusiveMinimum: 0, default: DEFAULT_TOKEN_GRACE_PERIOD_HOURS, description: `How long cached Keycloak material stays usable while Keycloak is unreachable, in hours: session tokens after they were cached, and the stored JWKS after it was fetched (past it the mode is offline). Default is ${DEFAULT_TOKEN_GRACE_PERIOD_HOURS}.` }),
  health_check_cache_seconds: Type.Integer({ minimum: 1, default: DEFAULT_HEALTH_CHECK_CACHE_SECONDS, description: `A server that has not been heard from for this long is health-checked (its realm's discovery document); results are reused for as long. Default is ${DEFAULT_HEALTH_CHECK_CACHE_SECONDS}.` }),
  allow_offline_mode: Type.Boolean({ default: true, description: 'While Keycloak is unreachable, let people in on what Gatehouse holds: sessions on cached tokens (mode cached) and, with auth.primary keycloak, logins on cached credentials. When false those wait for Keycloak (local users of auth.primary local still log in). Default is true.' })
}, { additionalProperties: false, default: {}, description: 'Circuit breakers and grace periods (the original system\'s keycloak.resilience).' })

export const HaServerSchema = Type.Object({
  server: HttpUrl('Back-channel base URL of this Keycloak server. Required.'),
  priority: Type.Integer({ minimum: 0, default: DEFAULT_SERVER_PRIORITY, description: `Lower is preferred (strategy priority; failover order for the others). Default is ${DEFAULT_SERVER_PRIORITY}.` }),
  weight: Type.Integer({ minimum: 0, default: DEFAULT_SERVER_WEIGHT, description: `Share of calls under strategy round_robin. Default is ${DEFAULT_SERVER_WEIGHT}.` })
}, { additionalProperties: false })

export const HaSchema = Type.Object({
  enabled: Type.Boolean({ default: false, description: 'Use keycloak.ha.servers instead of keycloak.server. Default is false.' }),
  strategy: Type.Union([Type.Literal('priority'), Type.Literal('round_robin'), Type.Literal('random')], {
    default: DEFAULT_HA_STRATEGY,
    'x-expected': 'priority, round_robin or random',
    description: `How a healthy server is chosen: priority (lowest first), round_robin (weighted), random. Default is ${DEFAULT_HA_STRATEGY}.`
  }),
  servers: Type.Array(HaServerSchema, { default: [], description: 'The servers of one Keycloak cluster (same realm, same keys), each behind its own circuit breaker. Default is none.' })
}, { additionalProperties: false, default: {}, description: 'Several Keycloak servers with failover (the original system\'s keycloak.ha).' })

export const AdminApiSchema = Type.Object({
  client_id: Type.Optional(Type.String({ minLength: 1, description: 'Client whose service account calls the Admin API (client credentials; realm-management roles manage-users, view-users, query-groups). Default is keycloak.client_id.' })),
  client_secret: Type.Optional(Type.String({ minLength: 1, 'x-secret': true, description: 'That client\'s secret. Default is keycloak.client_secret.' }))
}, { additionalProperties: false, default: {}, description: 'The Keycloak Admin API, used by the sync queue to replay identity writes.' })

export const EndpointsSchema = Type.Object({
  authorization: Type.Optional(HttpUrl('The authorization endpoint browsers are sent to. Default is the one discovery names.')),
  token: Type.Optional(HttpUrl('The token endpoint (code exchange, refresh, password grant). Default is the one discovery names.')),
  jwks: Type.Optional(HttpUrl('The JWKS (`jwks_uri`). Default is the one discovery names.')),
  userinfo: Type.Optional(HttpUrl('The userinfo endpoint. Default is the one discovery names.')),
  end_session: Type.Optional(HttpUrl('The end-session endpoint (RP-initiated logout). Default is the one discovery names; without one, logout is local only.')),
  revocation: Type.Optional(HttpUrl('The revocation endpoint. Default is the one discovery names.'))
}, { additionalProperties: false, default: {}, description: 'Endpoints as the provider publishes them (public URLs), overriding discovery: for a first start while the provider is unreachable, or a provider whose discovery is wrong. Back-channel calls are moved onto keycloak.server (or each HA server). Default is none: every endpoint comes from `{issuer}/.well-known/openid-configuration`, kept in SQLite.' })

export const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'] as const

export const KeycloakSchema = Type.Object({
  issuer: HttpUrl('The public issuer tokens carry (`iss`), exactly: a Keycloak realm URL `{public base}/realms/{realm}`, or any OpenID provider\'s issuer. The browser is always sent to the provider\'s public endpoints. Required.'),
  provider: Type.Union([Type.Literal('auto'), Type.Literal('keycloak'), Type.Literal('generic')], {
    default: 'auto',
    'x-expected': 'auto, keycloak or generic',
    description: 'What kind of OpenID provider issuer is: keycloak (the Admin API, the sync queue and Keycloak\'s claims) or generic (any standards provider: those features are off). auto: keycloak when issuer ends in /realms/{realm}, else generic. Default is auto.'
  }),
  realm: Type.Optional(Type.String({ minLength: 1, description: 'Keycloak only: the realm name. Default is the last segment of `issuer`.' })),
  server: Type.Optional(HttpUrl('Back-channel base URL Gatehouse itself calls: for Keycloak the server (`http://keycloak:8080`, with `/auth` if Keycloak runs under that path), for a generic provider the URL that stands for `issuer` on the back channel. Required for Keycloak unless keycloak.ha.enabled; for a generic provider the default is `issuer` itself.')),
  endpoints: EndpointsSchema,
  client_id: Type.String({ minLength: 1, description: 'This app\'s client id at the provider. Tokens must name it in `aud`, `azp` or `client_id`. Required.' }),
  client_secret: Type.Optional(Type.String({ minLength: 1, 'x-secret': true, description: 'The client\'s secret (confidential clients). Use ${VAR} substitution. Default is none.' })),
  client_auth_method: Type.Union(CLIENT_AUTH_METHODS.map((m) => Type.Literal(m)), {
    default: 'client_secret_basic',
    'x-expected': CLIENT_AUTH_METHODS.join(', '),
    description: 'How Gatehouse authenticates to the token endpoint (RFC 6749 §2.3, OIDC Core §9): client_secret_basic, client_secret_post, or private_key_jwt (with keycloak.client_private_key). Checked against discovery\'s token_endpoint_auth_methods_supported. Default is client_secret_basic.'
  }),
  client_private_key: Type.Optional(Type.String({ minLength: 1, 'x-secret': true, description: 'For private_key_jwt: the client\'s private key, a PKCS#8 PEM or a private JWK (JSON); its `kid` (or keycloak.client_key_id) names it to the provider. Use ${VAR} substitution. Default is none.' })),
  client_key_id: Type.Optional(Type.String({ minLength: 1, description: 'For private_key_jwt: the `kid` of keycloak.client_private_key when the key does not carry one. Default is none.' })),
  audiences: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'Further client ids accepted in a token\'s `aud`, `azp` or `client_id` (other apps whose tokens may call this one), and whose client roles count. Default is none.' }),
  timeout_ms: Type.Integer({ minimum: 1, default: DEFAULT_KEYCLOAK_TIMEOUT_MS, description: `Deadline of every call to the provider, failover to other servers included, in milliseconds; no user request waits longer. Default is ${DEFAULT_KEYCLOAK_TIMEOUT_MS} (2 seconds).` }),
  jwks: JwksSchema,
  resilience: ResilienceSchema,
  ha: HaSchema,
  admin: AdminApiSchema
}, { additionalProperties: false, description: 'The OpenID provider tokens come from: Keycloak first (the key keeps its name), any standards provider through discovery.' })

export const TokensSchema = Type.Object({
  algorithms: Type.Array(Type.Union(DEFAULT_ALGORITHMS.map((a) => Type.Literal(a)), { 'x-expected': `one of ${DEFAULT_ALGORITHMS.join(', ')} (asymmetric only)` }), {
    minItems: 1,
    uniqueItems: true,
    default: [...DEFAULT_ALGORITHMS],
    description: 'Signature algorithms accepted on access tokens. `none` and HMAC can never be configured. Default is every asymmetric JWS algorithm.'
  }),
  clock_skew_seconds: Type.Integer({ minimum: 0, maximum: 300, default: DEFAULT_CLOCK_SKEW_SECONDS, description: `Tolerance on \`exp\`, \`nbf\` and \`iat\`, in seconds. Default is ${DEFAULT_CLOCK_SKEW_SECONDS}.` }),
  audiences: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'Values accepted in a token\'s `aud` besides the client ids (a resource indicator such as `https://api.example.com`, RFC 8707 and RFC 9068 §4). Default is none.' }),
  cache_max_entries: Type.Integer({ minimum: 0, default: DEFAULT_TOKEN_CACHE_MAX_ENTRIES, description: `How many verified tokens are remembered (each until its \`exp\`); 0 turns the cache off. Default is ${DEFAULT_TOKEN_CACHE_MAX_ENTRIES}.` })
}, { additionalProperties: false, default: {}, description: 'Bearer access-token validation.' })

export const ClaimsSchema = Type.Object({
  user: Type.Union([Type.Literal('sub'), Type.Literal('preferred_username'), Type.Literal('email')], {
    default: 'sub',
    'x-expected': 'sub, preferred_username or email',
    description: 'Which claim the user header (X-Auth-Request-User) carries. Default is sub.'
  }),
  username: Type.String({ minLength: 1, default: 'preferred_username', description: 'Claim path of the user name (headers.preferred_username). Default is preferred_username.' }),
  email: Type.String({ minLength: 1, default: 'email', description: 'Claim path of the e-mail address. Default is email.' }),
  email_verified: Type.String({ minLength: 1, default: 'email_verified', description: 'Claim path of whether the e-mail address is verified (true, or the string "true"); only a verified address satisfies a policy\'s emails or email_domains. Default is email_verified.' }),
  name: Type.String({ minLength: 1, default: 'name', description: 'Claim path of the display name (userinfo). Default is name.' }),
  groups: Type.String({ minLength: 1, default: 'groups', description: 'Claim path of the group list (Keycloak\'s group-membership mapper, or any flat list). Default is groups.' }),
  roles: Type.Array(Type.String({ minLength: 1 }), {
    default: ['realm_access.roles', 'resource_access.{client}.roles'],
    description: 'Claim paths the roles come from, dot-separated: `realm_access.roles` (Keycloak realm roles, named as they are), `resource_access.{client}.roles` (each client id\'s roles, named `client:role`), or a flat claim such as `roles`. Default is Keycloak\'s two.'
  }),
  userinfo: Type.Boolean({ default: false, description: 'At login (and refresh), also ask the userinfo endpoint and merge what it says into the session\'s identity. Default is false: the access token and the ID token are merged.' })
}, { additionalProperties: false, default: {}, description: 'Where the identity comes from in tokens and userinfo. Keycloak\'s claims are the defaults.' })

export const HeadersSchema = Type.Object({
  user: HeaderName(DEFAULT_HEADERS.user, `Carries \`sub\` (or the local user name). Default is ${DEFAULT_HEADERS.user}.`),
  preferred_username: HeaderName(DEFAULT_HEADERS.preferred_username, `Carries \`preferred_username\`. Default is ${DEFAULT_HEADERS.preferred_username}.`),
  email: HeaderName(DEFAULT_HEADERS.email, `Carries \`email\`. Default is ${DEFAULT_HEADERS.email}.`),
  groups: HeaderName(DEFAULT_HEADERS.groups, `Carries \`groups\`, comma-separated. Default is ${DEFAULT_HEADERS.groups}.`),
  roles: HeaderName(DEFAULT_HEADERS.roles, `Carries the roles, comma-separated and expanded by the policies (mapped, from groups, inherited): realm roles as named, client roles as \`client:role\`. Default is ${DEFAULT_HEADERS.roles}.`),
  permissions: HeaderName(DEFAULT_HEADERS.permissions, `Carries the permissions the roles grant under the policies' \`roles:\`, comma-separated. Default is ${DEFAULT_HEADERS.permissions}.`),
  mode: HeaderName(DEFAULT_HEADERS.mode, `Carries how the caller was authenticated: keycloak, cached, local, token or service (a Gatehouse service token). Default is ${DEFAULT_HEADERS.mode}.`),
  access_token: HeaderName(DEFAULT_HEADERS.access_token, `Carries the access token when \`pass_access_token\` is on. Default is ${DEFAULT_HEADERS.access_token}.`),
  pass_access_token: Type.Boolean({ default: false, description: 'Send the caller\'s access token to the app in the access_token header. Default is false.' }),
  pass_authorization_header: Type.Boolean({ default: false, description: 'Send `Authorization: Bearer <access token>` to the app (replacing the client\'s). When false the client\'s own Authorization header is passed through unchanged. Default is false.' })
}, { additionalProperties: false, default: {}, description: 'Identity headers sent to the app. Every one of them that a client sends is removed first.' })

/** What a route requires when no rule names it. */
export const POLICY_DEFAULTS = ['public', 'authenticated', 'deny'] as const

export const PoliciesSchema = Type.Object({
  dir: Type.String({ minLength: 1, default: DEFAULT_POLICIES_DIR, description: `Directory of policy files (*.yaml and *.yml, merged in name order; see policies/README.md), relative to the config file. Default is ${DEFAULT_POLICIES_DIR}.` }),
  default: Type.Union(POLICY_DEFAULTS.map((p) => Type.Literal(p)), {
    default: DEFAULT_POLICY,
    'x-expected': 'public, authenticated or deny',
    description: `What a route no rule matches requires: public, authenticated or deny. Default is ${DEFAULT_POLICY}.`
  }),
  watch: Type.Boolean({ default: true, description: 'Reload the policies when a file in dir changes (serve; SIGHUP reloads them too). A set that fails validation is rejected whole and the running one stays. Default is true.' }),
  reload_debounce_ms: Type.Integer({ minimum: 0, maximum: 60_000, default: DEFAULT_POLICY_RELOAD_DEBOUNCE_MS, description: `How long changes to the files must settle before a watched reload, in milliseconds (an editor's save is several events). Default is ${DEFAULT_POLICY_RELOAD_DEBOUNCE_MS}.` })
}, { additionalProperties: false, default: {}, description: 'Route rules, roles and mappings (DESIGN §2; policies/README.md).' })

export const DatabaseSchema = Type.Object({
  path: Type.String({ minLength: 1, default: DEFAULT_DATABASE_PATH, description: `SQLite file, relative to the config file; \`:memory:\` for a throw-away store. Default is ${DEFAULT_DATABASE_PATH}.` }),
  busy_timeout_ms: Type.Integer({ minimum: 0, default: DEFAULT_BUSY_TIMEOUT_MS, description: `How long a write waits for another writer's lock, in milliseconds. Default is ${DEFAULT_BUSY_TIMEOUT_MS}.` })
}, { additionalProperties: false, default: {}, description: 'The local store: users, sessions, token and JWKS caches, sync queue, audit log.' })

export const DEFAULT_STORE_SESSIONS = 'sqlite'
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379'
export const DEFAULT_REDIS_KEY_PREFIX = 'gatehouse:'
export const DEFAULT_REDIS_CONNECT_TIMEOUT_MS = 1000
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 250
export const DEFAULT_REDIS_FAILURE_THRESHOLD = 3
export const DEFAULT_REDIS_COOLDOWN_SECONDS = 5

export const RedisSentinelSchema = Type.Object({
  host: Type.String({ minLength: 1, description: 'A Sentinel\'s host name or address. Required.' }),
  port: Port(26379, 'The Sentinel\'s port. Default is 26379.')
}, { additionalProperties: false, description: 'One Redis Sentinel.' })

export const RedisSchema = Type.Object({
  url: Type.String({
    pattern: '^rediss?://',
    default: DEFAULT_REDIS_URL,
    'x-expected': 'a redis:// or rediss:// URL',
    description: `Where Redis is: \`redis://host:port/db\`, or \`rediss://\` for TLS (the system's CA store verifies the server). Without sentinels, the server itself; with them, only the database number and TLS are read from it. Default is ${DEFAULT_REDIS_URL}.`
  }),
  username: Type.Optional(Type.String({ minLength: 1, description: 'Redis ACL user (AUTH username password); from the environment: `${REDIS_USERNAME}`. Default is none (the default user).' })),
  password: Type.Optional(Secret('The ACL user\'s password (or requirepass); from the environment: `${REDIS_PASSWORD}`. Default is none.')),
  key_prefix: Type.String({ minLength: 1, default: DEFAULT_REDIS_KEY_PREFIX, description: `Put before every key and channel, so several apps share one Redis; give each app its own (e.g. \`gatehouse:billing:\`). Default is ${DEFAULT_REDIS_KEY_PREFIX}.` }),
  connect_timeout_ms: Type.Integer({ minimum: 1, default: DEFAULT_REDIS_CONNECT_TIMEOUT_MS, description: `How long a connection attempt may take, and how long start-up waits for Redis before carrying on from SQLite, in milliseconds. Default is ${DEFAULT_REDIS_CONNECT_TIMEOUT_MS}.` }),
  command_timeout_ms: Type.Integer({ minimum: 1, default: DEFAULT_REDIS_COMMAND_TIMEOUT_MS, description: `The deadline of one Redis command, in milliseconds: a request never waits longer on Redis, and a timeout counts toward the circuit breaker. Default is ${DEFAULT_REDIS_COMMAND_TIMEOUT_MS}.` }),
  failure_threshold: Type.Integer({ minimum: 1, default: DEFAULT_REDIS_FAILURE_THRESHOLD, description: `Consecutive failed Redis commands that open its circuit: then nothing waits on Redis, and sessions carry on from SQLite. Default is ${DEFAULT_REDIS_FAILURE_THRESHOLD}.` }),
  cooldown_seconds: Type.Integer({ minimum: 1, default: DEFAULT_REDIS_COOLDOWN_SECONDS, description: `How long an open Redis circuit waits before one probe, in seconds (a reconnect closes it at once). Default is ${DEFAULT_REDIS_COOLDOWN_SECONDS}.` }),
  sentinels: Type.Array(RedisSentinelSchema, { default: [], description: 'Redis Sentinels to ask for the primary of `name` (and again after a failover). Default is none: `url` is the server.' }),
  name: Type.Optional(Type.String({ minLength: 1, description: 'The Sentinel master group name (`sentinel monitor NAME …`). Required with sentinels.' })),
  sentinel_password: Type.Optional(Secret('The Sentinels\' own password (`requirepass` in sentinel.conf), when they have one. Default is none.'))
}, { additionalProperties: false, default: {}, description: 'Redis, when store.sessions is redis.' })

export const StoreSchema = Type.Object({
  sessions: Type.Union([Type.Literal('sqlite'), Type.Literal('redis')], {
    default: DEFAULT_STORE_SESSIONS,
    'x-expected': 'sqlite or redis',
    description: `Where sessions, their cached tokens, revocations, lockout counters, refresh locks and the shared copy of service tokens live: \`sqlite\` (this sidecar's file; one replica) or \`redis\` (shared by every replica of the app; the SQLite file stays the local copy that carries sessions while Redis is unreachable). Default is ${DEFAULT_STORE_SESSIONS}.`
  }),
  redis: RedisSchema
}, { additionalProperties: false, default: {}, description: 'The session store (issue 14): one sidecar, or several replicas sharing Redis.' })

/** Log levels pino knows. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export const LogSchema = Type.Object({
  level: Type.Union(LOG_LEVELS.map((l) => Type.Literal(l)), {
    default: DEFAULT_LOG_LEVEL,
    'x-expected': 'one of fatal, error, warn, info, debug, trace, silent',
    description: `Minimum log level. Default is ${DEFAULT_LOG_LEVEL}.`
  }),
  access_log: Type.Boolean({ default: true, description: 'Write one line per request (decision, reason, latency). Default is true.' })
}, { additionalProperties: false, default: {}, description: 'Logging (JSON lines on standard output; secrets are always censored).' })

export const FeatureFlagsSchema = Type.Object({
  keycloak_enabled: Type.Boolean({ default: true, description: 'When false Gatehouse never calls Keycloak: tokens are checked against the stored JWKS only. Default is true.' })
}, { additionalProperties: false, default: {}, description: 'Switches for whole features.' })

export const AuthSchema = Type.Object({
  primary: Type.Union([Type.Literal('keycloak'), Type.Literal('local')], {
    default: DEFAULT_AUTH_PRIMARY,
    'x-expected': 'keycloak or local',
    description: `Which side owns passwords. keycloak: Keycloak decides every password while reachable; a hash of the last password it accepted is cached for logins during an outage. local: Gatehouse's own user table decides; Keycloak is asked for tokens best-effort and password changes are pushed to it. Default is ${DEFAULT_AUTH_PRIMARY}.`
  })
}, { additionalProperties: false, default: {}, description: 'Dual authentication (DESIGN §1).' })

export const SessionSchema = Type.Object({
  cookie_name: Type.String({ pattern: '^[A-Za-z0-9_-]+$', 'x-expected': 'a cookie name (letters, digits, _ and -)', default: DEFAULT_SESSION_COOKIE, description: `Name of the session cookie; behind TLS it gets the __Host- prefix. Default is ${DEFAULT_SESSION_COOKIE}.` }),
  cookie_secure: Type.Union([Type.Literal('auto'), Type.Literal('always'), Type.Literal('never')], {
    default: 'auto',
    'x-expected': 'auto, always or never',
    description: 'Mark cookies Secure (and use the __Host- prefix): auto when the request came over https (as trust_proxy allows), always, or never. Default is auto.'
  }),
  idle_timeout_minutes: Type.Integer({ minimum: 1, default: DEFAULT_IDLE_TIMEOUT_MINUTES, description: `A session unused this long ends, in minutes. Default is ${DEFAULT_IDLE_TIMEOUT_MINUTES}.` }),
  absolute_timeout_hours: Type.Number({ exclusiveMinimum: 0, default: DEFAULT_ABSOLUTE_TIMEOUT_HOURS, description: `A session ends this long after login however active, in hours. Default is ${DEFAULT_ABSOLUTE_TIMEOUT_HOURS}.` }),
  touch_interval_seconds: Type.Integer({ minimum: 1, default: DEFAULT_TOUCH_INTERVAL_SECONDS, description: `How often sessions' last-seen times are written, in one batch, in seconds (the idle timeout's resolution). Default is ${DEFAULT_TOUCH_INTERVAL_SECONDS}.` }),
  refresh_window_seconds: Type.Integer({ minimum: 0, default: DEFAULT_REFRESH_WINDOW_SECONDS, description: `Keycloak tokens expiring within this many seconds are refreshed in the background, in seconds. Default is ${DEFAULT_REFRESH_WINDOW_SECONDS}.` }),
  after_grace: Type.Union([Type.Literal('login'), Type.Literal('local')], {
    default: 'login',
    'x-expected': 'login or local',
    description: 'When a session\'s cached tokens pass the grace period while Keycloak is still unreachable: login (the person logs in again, on the local form) or local (the session goes on in mode local, when local logins are allowed for the user). Default is login.'
  }),
  cache_max_entries: Type.Integer({ minimum: 0, default: DEFAULT_SESSION_CACHE_MAX_ENTRIES, description: `Sessions kept in memory in front of SQLite. Default is ${DEFAULT_SESSION_CACHE_MAX_ENTRIES}.` }),
  end_others_on_password_change: Type.Boolean({ default: true, description: 'A password change ends every other session of the person, with its cached tokens, and keeps the one that made the change (OWASP ASVS 3.3.3). Default is true.' })
}, { additionalProperties: false, default: {}, description: 'Browser sessions.' })

export const PasswordPolicySchema = Type.Object({
  min_length: Type.Integer({ minimum: 1, default: DEFAULT_PASSWORD_MIN_LENGTH, description: `Shortest new password. Default is ${DEFAULT_PASSWORD_MIN_LENGTH}.` }),
  not_username: Type.Boolean({ default: true, description: 'A new password may not contain the user name. Default is true.' }),
  not_current: Type.Boolean({ default: true, description: 'A new password may not be the current one. Default is true.' })
}, { additionalProperties: false, default: {}, description: 'Rules for new passwords (change password, users add/passwd).' })

export const LocalAuthSchema = Type.Object({
  allow: Type.Union([Type.Literal('all'), Type.Literal('none'), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], {
    default: 'all',
    'x-expected': 'all, none, or a list of roles',
    description: 'Who may log in without Keycloak (modes local and cached): all, none, or only users holding one of these roles (break-glass, e.g. [admin]). Default is all.'
  }),
  cached_credentials_days: Type.Integer({ minimum: 0, default: DEFAULT_CACHED_CREDENTIALS_DAYS, description: `With auth.primary keycloak, how long a password Keycloak accepted may be used for offline logins, in days (0: never cached). Default is ${DEFAULT_CACHED_CREDENTIALS_DAYS}.` }),
  queue_password_changes: Type.Boolean({ default: false, description: 'With auth.primary keycloak, accept password changes while Keycloak is unreachable and queue them (otherwise they are refused until it is back). Default is false.' }),
  password_policy: PasswordPolicySchema
}, { additionalProperties: false, default: {}, description: 'Logins that do not depend on Keycloak.' })

export const SecuritySchema = Type.Object({
  max_failed_attempts: Type.Integer({ minimum: 1, default: DEFAULT_MAX_FAILED_ATTEMPTS, description: `Failed logins (per user, and per client address) within window_minutes that lock further attempts. Default is ${DEFAULT_MAX_FAILED_ATTEMPTS}.` }),
  window_minutes: Type.Integer({ minimum: 1, default: DEFAULT_WINDOW_MINUTES, description: `The window failed logins are counted in, in minutes. Default is ${DEFAULT_WINDOW_MINUTES}.` }),
  lockout_minutes: Type.Integer({ minimum: 1, default: DEFAULT_LOCKOUT_MINUTES, description: `How long a lockout lasts, in minutes. Default is ${DEFAULT_LOCKOUT_MINUTES}.` })
}, { additionalProperties: false, default: {}, description: 'Brute-force protection.' })

export const DEFAULT_SYNC_INTERVAL_SECONDS = 60
export const DEFAULT_SYNC_BATCH_SIZE = 100
export const DEFAULT_SYNC_MAX_ATTEMPTS = 10

export const SyncSchema = Type.Object({
  enabled: Type.Boolean({ default: true, description: 'Run the replay worker inside serve. When false, run `gatehouse sync start` beside it instead (or nothing replays). Default is true.' }),
  interval_seconds: Type.Integer({ minimum: 1, default: DEFAULT_SYNC_INTERVAL_SECONDS, description: `How often the worker looks for due items, in seconds; it also runs at once when Keycloak comes back and when an item is queued. Default is ${DEFAULT_SYNC_INTERVAL_SECONDS}.` }),
  batch_size: Type.Integer({ minimum: 1, maximum: 1000, default: DEFAULT_SYNC_BATCH_SIZE, description: `Items claimed at a time. Default is ${DEFAULT_SYNC_BATCH_SIZE}.` }),
  max_attempts: Type.Integer({ minimum: 1, default: DEFAULT_SYNC_MAX_ATTEMPTS, description: `Failed attempts (Keycloak answered with an error) after which an item is dead. Attempts while Keycloak is unreachable do not count. Default is ${DEFAULT_SYNC_MAX_ATTEMPTS}.` }),
  backoff_base_seconds: Type.Integer({ minimum: 1, default: 5, description: 'First retry delay, doubled after each failure, with jitter. Default is 5.' }),
  backoff_max_seconds: Type.Integer({ minimum: 1, default: 900, description: 'Longest retry delay. Default is 900 (15 minutes).' }),
  lease_seconds: Type.Integer({ minimum: 5, default: 120, description: 'How long a worker holds a claimed item; an item whose worker died is claimed again after it. Default is 120.' })
}, { additionalProperties: false, default: {}, description: 'The sync queue\'s replay worker (identity writes to Keycloak).' })

export const DEFAULT_SERVICE_TOKEN_EXPIRES_DAYS = 90
export const DEFAULT_SERVICE_TOKEN_GRACE_DAYS = 7
export const DEFAULT_SERVICE_TOKEN_EXPIRY_WARNING_DAYS = 14
export const DEFAULT_SERVICE_TOKEN_GRACE_WARNING_HOURS = 24
export const DEFAULT_SERVICE_TOKEN_MAX_FAILED_ATTEMPTS = 20
export const DEFAULT_SERVICE_TOKEN_LOCKOUT_MINUTES = 15
export const DEFAULT_AUTO_ROTATE_CHECK_MINUTES = 60
export const DEFAULT_AUTO_ROTATE_HOOK_TIMEOUT_SECONDS = 30

export const AutoRotateSchema = Type.Object({
  check_interval_minutes: Type.Integer({ minimum: 1, default: DEFAULT_AUTO_ROTATE_CHECK_MINUTES, description: `How often serve looks for tokens due for automatic rotation, in minutes. Default is ${DEFAULT_AUTO_ROTATE_CHECK_MINUTES}.` }),
  output_dir: Type.Optional(Type.String({ minLength: 1, description: 'Directory (relative to the config file) where an automatically rotated token is written, as `NAME.token`, mode 0600, replaced atomically. Default is none.' })),
  hook: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'A command run (without a shell, without PATH, with none of Gatehouse\'s environment) after an automatic rotation, as [program, args...], the program a path (relative to the config file): the new token on its standard input, GATEHOUSE_TOKEN_NAME, GATEHOUSE_TOKEN_ID and GATEHOUSE_TOKEN_EXPIRES_AT in its environment; a non-zero exit takes the rotation back. Its output is never logged. Default is none.' })),
  hook_timeout_seconds: Type.Integer({ minimum: 1, default: DEFAULT_AUTO_ROTATE_HOOK_TIMEOUT_SECONDS, description: `How long the hook may run before it is killed and the rotation taken back, in seconds. Default is ${DEFAULT_AUTO_ROTATE_HOOK_TIMEOUT_SECONDS}.` })
}, { additionalProperties: false, default: {}, description: 'Automatic rotation of tokens created with --auto-rotate-days: off for every token unless asked for, and only done when output_dir or hook says where the new token goes (see the README for the risks).' })

export const ServiceTokensSchema = Type.Object({
  enabled: Type.Boolean({ default: true, description: 'Accept service tokens (`Authorization: Bearer ght_...`). When false such a token is refused like any malformed bearer token. Default is true.' }),
  default_expires_days: Type.Integer({ minimum: 1, default: DEFAULT_SERVICE_TOKEN_EXPIRES_DAYS, description: `Lifetime of a token created or rotated without --expires-days, in days. Default is ${DEFAULT_SERVICE_TOKEN_EXPIRES_DAYS}.` }),
  default_grace_days: Type.Number({ minimum: 0, default: DEFAULT_SERVICE_TOKEN_GRACE_DAYS, description: `How long the previous token stays valid after a rotation without --grace-days (and after an automatic one), in days; never beyond its own expiry. Default is ${DEFAULT_SERVICE_TOKEN_GRACE_DAYS}.` }),
  expiry_warning_days: Type.Integer({ minimum: 0, default: DEFAULT_SERVICE_TOKEN_EXPIRY_WARNING_DAYS, description: `A token expiring within this many days is listed by /status and raises the expiry alert. Default is ${DEFAULT_SERVICE_TOKEN_EXPIRY_WARNING_DAYS}.` }),
  grace_warning_hours: Type.Number({ minimum: 0, default: DEFAULT_SERVICE_TOKEN_GRACE_WARNING_HOURS, description: `A previous token used within the last this many hours, with less than this many hours of its grace period left, raises the grace alert. Default is ${DEFAULT_SERVICE_TOKEN_GRACE_WARNING_HOURS}.` }),
  max_failed_attempts: Type.Integer({ minimum: 0, default: DEFAULT_SERVICE_TOKEN_MAX_FAILED_ATTEMPTS, description: `Malformed or wrong service tokens from one client address within lockout_minutes after which that address's service tokens are refused for lockout_minutes (per process, in memory); 0: no limit. Default is ${DEFAULT_SERVICE_TOKEN_MAX_FAILED_ATTEMPTS}.` }),
  lockout_minutes: Type.Integer({ minimum: 1, default: DEFAULT_SERVICE_TOKEN_LOCKOUT_MINUTES, description: `The window failures are counted in, and how long an address stays locked, in minutes. Default is ${DEFAULT_SERVICE_TOKEN_LOCKOUT_MINUTES}.` }),
  auto_rotate: AutoRotateSchema
}, { additionalProperties: false, default: {}, description: 'Service tokens for machine clients (`gatehouse tokens ...`): stored as hashes, rotated with a grace period, revoked at once.' })

export const SecretsSchema = Type.Object({
  encryption_keys: Type.Array(Secret('A 32-byte key, base64 or hex.'), { minItems: 1, description: 'Keys for tokens and queued passwords at rest (AES-256-GCM): the first encrypts, every one decrypts, so keys rotate by adding a new one first. Required; keep them in the environment.' }),
  cookie_keys: Type.Array(Secret('At least 32 characters.'), { minItems: 1, description: 'Keys signing cookies and CSRF tokens: the first signs, every one verifies. Required; keep them in the environment.' })
}, { additionalProperties: false, description: 'Key rings. Required.' })

export const DEFAULT_SMTP_PORT = 587
export const DEFAULT_SMTP_TIMEOUT_MS = 10_000

export const SmtpSchema = Type.Object({
  host: Type.Optional(Type.String({ minLength: 1, description: 'The SMTP server e-mail is sent through (alerts.email, password_reset). Default is none: no e-mail is sent.' })),
  port: Type.Integer({ minimum: 1, maximum: 65535, default: DEFAULT_SMTP_PORT, description: `Its port: 587 for submission with STARTTLS, 465 for implicit TLS, 25 for a local relay. Default is ${DEFAULT_SMTP_PORT}.` }),
  tls: Type.Union([Type.Literal('starttls'), Type.Literal('implicit'), Type.Literal('none')], {
    default: 'starttls',
    'x-expected': 'starttls, implicit or none',
    description: 'starttls: upgrade with STARTTLS and refuse to send without it (RFC 3207); implicit: TLS from the first byte (port 465, RFC 8314); none: plain text, for a relay on the same host only. Default is starttls.'
  }),
  username: Type.Optional(Type.String({ minLength: 1, description: 'User name for SMTP AUTH. Default is none (no AUTH).' })),
  password: Type.Optional(Secret('Password for SMTP AUTH; use ${VAR} substitution. Default is none.')),
  from: Type.Optional(Type.String({ minLength: 3, description: 'The From address of every message, e.g. `Gatehouse <gatehouse@example.com>`. Required when e-mail is sent. Default is none.' })),
  timeout_ms: Type.Integer({ minimum: 100, default: DEFAULT_SMTP_TIMEOUT_MS, description: `Deadline of each SMTP connection, greeting and command, in milliseconds. Default is ${DEFAULT_SMTP_TIMEOUT_MS} (10 seconds).` })
}, { additionalProperties: false, default: {}, description: 'Outgoing e-mail (nodemailer), shared by alerts and password reset.' })

export const DEFAULT_ALERT_INTERVAL_SECONDS = 60
export const DEFAULT_ALERT_REPEAT_MINUTES = 60
export const DEFAULT_CIRCUIT_OPEN_MINUTES = 5
export const DEFAULT_SYNC_QUEUE_WARNING = 100
export const DEFAULT_SYNC_QUEUE_CRITICAL = 1000
export const DEFAULT_FAILED_SYNC_THRESHOLD = 10
export const DEFAULT_REFRESH_FAILURE_RATE = 0.2
export const DEFAULT_REFRESH_MIN_ATTEMPTS = 20
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 5000

export const AlertWebhookSchema = Type.Object({
  enabled: Type.Boolean({ default: false, description: 'POST each alert, resolution and digest as JSON to url: a Slack-compatible payload (`text` and `attachments`, which Slack, Mattermost and Rocket.Chat incoming webhooks read) with the alert itself under `gatehouse`. Default is false.' }),
  url: Type.Optional(HttpUrl('Where to POST; an incoming-webhook URL carries its own secret, so use ${VAR} substitution. Required when enabled. Default is none.', { 'x-secret': true })),
  timeout_ms: Type.Integer({ minimum: 100, default: DEFAULT_WEBHOOK_TIMEOUT_MS, description: `Deadline of one POST, in milliseconds; a failed one is logged and counted, and the alert is not sent again before its repeat interval. Default is ${DEFAULT_WEBHOOK_TIMEOUT_MS}.` })
}, { additionalProperties: false, default: {}, description: 'The webhook channel.' })

export const AlertEmailSchema = Type.Object({
  enabled: Type.Boolean({ default: false, description: 'Send each alert, resolution and digest by e-mail through smtp. Default is false.' }),
  to: Type.Array(Type.String({ minLength: 3 }), { default: [], description: 'Recipients. Required (at least one) when enabled. Default is none.' }),
  subject_prefix: Type.String({ default: '[Gatehouse]', description: 'Put before every subject, for mail filters. Default is [Gatehouse].' })
}, { additionalProperties: false, default: {}, description: 'The e-mail channel.' })

export const AlertsSchema = Type.Object({
  enabled: Type.Boolean({ default: false, description: 'Evaluate the alert conditions inside serve and notify the channels below. Each sidecar alerts for itself: with many replicas prefer the Prometheus rules in deploy/prometheus/alerts.yaml. Default is false.' }),
  evaluation_interval_seconds: Type.Integer({ minimum: 5, default: DEFAULT_ALERT_INTERVAL_SECONDS, description: `How often the conditions are evaluated, in seconds. Default is ${DEFAULT_ALERT_INTERVAL_SECONDS}.` }),
  repeat_interval_minutes: Type.Integer({ minimum: 1, default: DEFAULT_ALERT_REPEAT_MINUTES, description: `A firing alert is sent again after this many minutes while it lasts; its resolution is sent once. Default is ${DEFAULT_ALERT_REPEAT_MINUTES}.` }),
  circuit_open_minutes_threshold: Type.Integer({ minimum: 1, default: DEFAULT_CIRCUIT_OPEN_MINUTES, description: `A Keycloak server whose circuit has been open (or half-open) this long fires circuit_open; it resolves when the server answers again. Default is ${DEFAULT_CIRCUIT_OPEN_MINUTES}.` }),
  sync_queue_warning_threshold: Type.Integer({ minimum: 1, default: DEFAULT_SYNC_QUEUE_WARNING, description: `Unfinished sync items (pending, processing, failed) above which sync_queue fires as a warning. Default is ${DEFAULT_SYNC_QUEUE_WARNING}.` }),
  sync_queue_critical_threshold: Type.Integer({ minimum: 1, default: DEFAULT_SYNC_QUEUE_CRITICAL, description: `Unfinished sync items above which sync_queue is critical. Default is ${DEFAULT_SYNC_QUEUE_CRITICAL}.` }),
  failed_sync_threshold: Type.Integer({ minimum: 0, default: DEFAULT_FAILED_SYNC_THRESHOLD, description: `Sync items that failed or died in the last hour above which sync_failures fires. Default is ${DEFAULT_FAILED_SYNC_THRESHOLD}.` }),
  token_refresh_failure_rate_threshold: Type.Number({ minimum: 0, maximum: 1, default: DEFAULT_REFRESH_FAILURE_RATE, description: `Share of session token refreshes in the last 15 minutes that failed (anything but success; sessions without a refresh token are not counted) above which token_refresh_failures fires. Default is ${DEFAULT_REFRESH_FAILURE_RATE}.` }),
  token_refresh_min_attempts: Type.Integer({ minimum: 1, default: DEFAULT_REFRESH_MIN_ATTEMPTS, description: `Refreshes the last 15 minutes must hold before the failure rate is judged, so that one failure of two is not an alert. Default is ${DEFAULT_REFRESH_MIN_ATTEMPTS}.` }),
  daily_digest_time: Type.Optional(Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', 'x-expected': 'a time of day HH:MM (24-hour)', description: 'Send a digest of the last 24 hours (mode, alerts, logins, sync queue, keys) every day at this time in alerts.timezone, e.g. 08:00. Default is none: no digest.' })),
  timezone: Type.String({ minLength: 1, default: 'UTC', description: 'IANA time zone of daily_digest_time and of the times in messages (`Europe/Berlin`); UTC is always shown beside them. Default is UTC.' }),
  webhook: AlertWebhookSchema,
  email: AlertEmailSchema
}, { additionalProperties: false, default: {}, description: 'Alerts from the sidecar itself: conditions, channels, deduplication and a daily digest. State (firing, last sent) is kept in SQLite, so a restart does not send them again.' })

export const DEFAULT_RESET_TOKEN_TTL_MINUTES = 30
export const DEFAULT_RESET_PER_USER = 3
export const DEFAULT_RESET_PER_IP = 10
export const DEFAULT_RESET_WINDOW_MINUTES = 60

export const PasswordResetSchema = Type.Object({
  enabled: Type.Boolean({ default: false, description: 'Offer "Forgot your password?" to local users (auth.primary local, or local break-glass users): a link sent by e-mail through smtp, valid once, sets a new password; with auth.primary local the new password is queued for Keycloak. Needs smtp.host, smtp.from and server.public_url (links are never built from a request\'s Host). Default is false.' }),
  token_ttl_minutes: Type.Integer({ minimum: 1, maximum: 1440, default: DEFAULT_RESET_TOKEN_TTL_MINUTES, description: `How long a reset link works, in minutes; it works once. Default is ${DEFAULT_RESET_TOKEN_TTL_MINUTES}.` }),
  max_requests_per_user: Type.Integer({ minimum: 1, default: DEFAULT_RESET_PER_USER, description: `Reset requests for one user name or address within window_minutes; more are answered 429. Default is ${DEFAULT_RESET_PER_USER}.` }),
  max_requests_per_ip: Type.Integer({ minimum: 1, default: DEFAULT_RESET_PER_IP, description: `Reset requests from one client address within window_minutes. Default is ${DEFAULT_RESET_PER_IP}.` }),
  window_minutes: Type.Integer({ minimum: 1, default: DEFAULT_RESET_WINDOW_MINUTES, description: `The window reset requests are counted in, in minutes. Default is ${DEFAULT_RESET_WINDOW_MINUTES}.` }),
  subject: Type.String({ minLength: 1, default: 'Reset your password', description: 'Subject of the reset e-mail. Default is "Reset your password".' })
}, { additionalProperties: false, default: {}, description: 'Password reset by e-mail (`{prefix}/password-reset`).' })

const sections = {
  server: ServerSchema,
  admin: AdminSchema,
  upstream: UpstreamSchema,
  keycloak: KeycloakSchema,
  tokens: TokensSchema,
  claims: ClaimsSchema,
  headers: HeadersSchema,
  policies: PoliciesSchema,
  database: DatabaseSchema,
  store: StoreSchema,
  log: LogSchema,
  feature_flags: FeatureFlagsSchema,
  auth: AuthSchema,
  session: SessionSchema,
  local_auth: LocalAuthSchema,
  security: SecuritySchema,
  sync: SyncSchema,
  grpc: GrpcSchema,
  ext_authz: ExtAuthzSchema,
  forward_auth: ForwardAuthSchema,
  service_tokens: ServiceTokensSchema,
  smtp: SmtpSchema,
  alerts: AlertsSchema,
  password_reset: PasswordResetSchema,
  secrets: SecretsSchema
}

/** Names an `environments:` overlay may have; `GATEHOUSE_ENV` picks one. */
export const ENVIRONMENT_NAMES = ['production', 'staging', 'development'] as const
export type EnvironmentName = typeof ENVIRONMENT_NAMES[number]

/** The whole file, as validated after substitution and the environment overlay. */
export const ConfigSchema = Type.Object({
  ...sections,
  environments: Type.Optional(Type.Object(
    Object.fromEntries(ENVIRONMENT_NAMES.map((n) => [n, Type.Optional(Type.Object({}, { additionalProperties: true }))])),
    { additionalProperties: false, description: 'Per-environment overlays (production, staging, development), merged over the base when GATEHOUSE_ENV names one. Each is validated as if selected.' }
  ))
}, { additionalProperties: false })

/** A validated, defaulted, frozen configuration. */
export type Config = Static<typeof ConfigSchema> & {
  /** The environment whose overlay was applied, or none. */
  readonly environment: EnvironmentName | null
  /** Directory of the config file: relative paths in it resolve from here. */
  readonly base_dir: string
  readonly keycloak: Static<typeof KeycloakSchema> & {
    readonly realm: string
    /** `keycloak.provider` resolved: `auto` becomes keycloak or generic. */
    readonly kind: 'keycloak' | 'generic'
  }
}

export type KeycloakConfig = Config['keycloak']
export type HeadersConfig = Static<typeof HeadersSchema>
export type ServiceTokensConfig = Static<typeof ServiceTokensSchema>

/** True for schema nodes `config show` must redact. */
export function isSecretSchema (schema: TSchema): boolean {
  return (schema as Record<string, unknown>)['x-secret'] === true
}
