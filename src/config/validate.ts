import { isIP } from 'node:net'
import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv'
import type { TSchema } from '@sinclair/typebox'
import type { ConfigProblem } from '../errors.ts'
import { decodeKey } from '../store/crypto.ts'

/**
 * Schema validation and cross-field checks. Both return problems, never throw, so that
 * `load.ts` can report every problem of a file at once (HOUSE-STYLE §3).
 */

/** A compiled validator for one schema: fills defaults in place and lists problems. */
export interface SchemaValidator {
  (data: unknown): ConfigProblem[]
}

/**
 * The Ajv every schema of Gatehouse is compiled with (`allErrors`, `useDefaults`, `strict`),
 * at run time or ahead of time for the bundle (`extra` adds the standalone-code options).
 */
export function schemaAjv (extra: Options = {}): Ajv {
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, verbose: true, allowUnionTypes: true, ...extra })
  ajv.addKeyword({ keyword: 'x-secret', schemaType: 'boolean' })
  ajv.addKeyword({ keyword: 'x-expected', schemaType: 'string' })
  return ajv
}

/**
 * Compiles a TypeBox schema with {@link schemaAjv}, or wraps the bundle's precompiled
 * function for it when there is one (`config/precompiled.ts`).
 */
export function compileValidator (schema: TSchema, compiled?: ValidateFunction): SchemaValidator {
  const validate = compilePointedValidator(schema, compiled)
  return (data) => validate(data).map((p) => p.problem)
}

/** As {@link SchemaValidator}, each problem with the JSON pointer of the value it is about (policy files give its line). */
export interface PointedValidator {
  (data: unknown): Array<{ problem: ConfigProblem, pointer: string }>
}

/** As {@link compileValidator}, keeping each problem's JSON pointer. */
export function compilePointedValidator (schema: TSchema, compiled?: ValidateFunction): PointedValidator {
  const validate = compiled ?? schemaAjv().compile(prepareSchema(schema))
  return (data) => (validate(data) ? [] : formatErrors(validate, data))
}

/**
 * The schema as Ajv is given it: properties that have a default are dropped from `required`,
 * because Ajv checks `required` before it fills defaults, and the static type should still
 * say such fields are always present.
 */
export function prepareSchema (schema: TSchema): object {
  return relaxDefaults(schema) as object
}

function relaxDefaults (schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(relaxDefaults)
  if (schema === null || typeof schema !== 'object') return schema
  const node = schema as Record<string, unknown>
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(node)) out[key] = key === 'default' ? value : relaxDefaults(value)
  const properties = node.properties as Record<string, Record<string, unknown>> | undefined
  if (properties !== undefined && Array.isArray(node.required)) {
    out.required = (node.required as string[]).filter((name) => properties[name]?.default === undefined)
    if ((out.required as string[]).length === 0) delete out.required
  }
  return out
}

/** `/keycloak/ha/servers/1/weight` → `keycloak.ha.servers[1].weight`. */
export function pointerToPath (pointer: string, extra?: string): string {
  const parts = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
  if (extra !== undefined) parts.push(extra)
  let path = ''
  for (const part of parts) path += /^\d+$/.test(part) ? `[${part}]` : (path === '' ? part : `.${part}`)
  return path === '' ? '(top level)' : path
}

function valueAt (data: unknown, pointer: string): unknown {
  let node = data
  for (const part of pointer.split('/').slice(1)) {
    if (node === null || typeof node !== 'object') return undefined
    node = (node as Record<string, unknown>)[part.replace(/~1/g, '/').replace(/~0/g, '~')]
  }
  return node
}

/** Renders a value a person can recognise, short, never a secret. */
export function renderValue (value: unknown, secret = false): string {
  if (value === undefined) return 'nothing'
  if (secret) return '[redacted]'
  if (value === null) return 'null'
  if (Array.isArray(value)) return `a list (${value.length} item${value.length === 1 ? '' : 's'})`
  if (typeof value === 'object') return 'a mapping'
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value)
  const typeName = typeof value === 'string' ? 'string' : typeof value
  const shown = text.length > 60 ? `${text.slice(0, 57)}...` : text
  return `${typeName} ${shown}`
}

function expectation (error: ErrorObject): string {
  const schema = error.parentSchema as Record<string, unknown> | undefined
  const worded = schema?.['x-expected']
  if (typeof worded === 'string' && error.keyword !== 'required' && error.keyword !== 'additionalProperties') return worded
  const p = error.params as Record<string, unknown>
  switch (error.keyword) {
    case 'type': return `${article(String(p.type))} ${p.type}`
    case 'minimum': return `a number >= ${p.limit}`
    case 'maximum': return `a number <= ${p.limit}`
    case 'exclusiveMinimum': return `a number > ${p.limit}`
    case 'minLength': return p.limit === 1 ? 'a non-empty string' : `a string of at least ${p.limit} characters`
    case 'minItems': return `a list of at least ${p.limit} item${p.limit === 1 ? '' : 's'}`
    case 'maxItems': return `a list of at most ${p.limit} items`
    case 'uniqueItems': return 'a list without duplicates'
    case 'enum': return `one of ${(p.allowedValues as unknown[]).join(', ')}`
    case 'const': return `exactly ${String(p.allowedValue)}`
    case 'pattern': return `a string matching ${String(p.pattern)}`
    case 'required': return 'a value (this key is required)'
    case 'anyOf': {
      const consts = ((schema?.anyOf as Array<Record<string, unknown>> | undefined) ?? []).map((b) => b.const)
      return consts.length > 0 && consts.every((c) => c !== undefined) ? `one of ${consts.join(', ')}` : 'a value of another type'
    }
    case 'additionalProperties': {
      const known = Object.keys((schema?.properties as Record<string, unknown> | undefined) ?? {})
      const near = known.find((k) => editDistance(k, String(p.additionalProperty)) <= 2)
      if (near !== undefined) return `no such key (did you mean ${near}?)`
      return known.length > 0 ? `no such key (known keys: ${known.join(', ')})` : 'no such key'
    }
    default: return error.message ?? error.keyword
  }
}

function editDistance (a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length] ?? 0
}

function article (word: string): string {
  return /^[aeiou]/.test(word) ? 'an' : 'a'
}

function formatErrors (validate: ValidateFunction, data: unknown): Array<{ problem: ConfigProblem, pointer: string }> {
  const errors = validate.errors ?? []
  // A union reports every branch's failure plus its own; keep only the union's line.
  const unions = errors.filter((e) => e.keyword === 'anyOf').map((e) => e.schemaPath + '/')
  const problems: Array<{ problem: ConfigProblem, pointer: string }> = []
  const seen = new Set<string>()
  for (const error of errors) {
    if (unions.some((prefix) => error.schemaPath.startsWith(prefix))) continue
    const p = error.params as Record<string, unknown>
    let problem: ConfigProblem
    let pointer = error.instancePath
    if (error.keyword === 'additionalProperties') {
      pointer += `/${String(p.additionalProperty).replace(/~/g, '~0').replace(/\//g, '~1')}`
      problem = { path: pointerToPath(error.instancePath, String(p.additionalProperty)), expected: expectation(error), received: 'an unknown key' }
    } else if (error.keyword === 'required') {
      problem = { path: pointerToPath(error.instancePath, String(p.missingProperty)), expected: expectation(error), received: 'nothing' }
    } else {
      const secret = (error.parentSchema as Record<string, unknown> | undefined)?.['x-secret'] === true
      problem = { path: pointerToPath(error.instancePath), expected: expectation(error), received: renderValue(valueAt(data, error.instancePath), secret) }
    }
    const key = `${problem.path}\u0000${problem.expected}`
    if (!seen.has(key)) {
      seen.add(key)
      problems.push({ problem, pointer })
    }
  }
  return problems
}

/** Minimal shape the cross-field checks read (the config before it is frozen). */
interface CrossFieldInput {
  secrets?: { encryption_keys?: string[], cookie_keys?: string[] }
  auth?: { primary?: string }
  local_auth?: { cached_credentials_days?: number }
  keycloak?: { issuer?: string, provider?: string, realm?: string, server?: string, client_auth_method?: string, client_secret?: string, client_private_key?: string, ha?: { enabled?: boolean, servers?: Array<{ server?: string }> } }
  upstream?: { url?: string }
  server?: { port?: number, host?: string, trust_proxy?: boolean | string[], public_url?: string }
  admin?: { port?: number, host?: string }
  smtp?: { host?: string, from?: string }
  alerts?: { sync_queue_warning_threshold?: number, sync_queue_critical_threshold?: number, timezone?: string, webhook?: { enabled?: boolean, url?: string }, email?: { enabled?: boolean, to?: string[] } }
  password_reset?: { enabled?: boolean }
  grpc?: { enabled?: boolean, port?: number, host?: string }
  forward_auth?: { trusted_proxies?: string[] }
  store?: { sessions?: string, redis?: { url?: string, sentinels?: unknown[], name?: string } }
}

/**
 * Checks a schema-valid configuration for problems no single key shows: URLs that do not
 * parse, an issuer that is not a Keycloak realm URL, listeners that collide.
 */
export function crossFieldProblems (input: Record<string, unknown>, explicit: Record<string, unknown> = input): ConfigProblem[] {
  const config = input as CrossFieldInput
  const problems: ConfigProblem[] = []
  const kc = config.keycloak
  const kind = kc?.issuer === undefined ? null : providerKindOf(kc.issuer, kc.provider)
  if (kc?.issuer !== undefined) {
    const url = parseUrl(kc.issuer)
    if (url === null) {
      problems.push({ path: 'keycloak.issuer', expected: 'a valid URL', received: renderValue(kc.issuer) })
    } else {
      const match = /\/realms\/([^/]+)\/?$/.exec(url.pathname)
      if (kind === 'keycloak' && match === null) {
        problems.push({ path: 'keycloak.issuer', expected: 'a Keycloak realm URL ending in /realms/{realm} (keycloak.provider is keycloak; set generic for another provider)', received: renderValue(kc.issuer) })
      } else if (kind === 'keycloak' && kc.realm !== undefined && decodeURIComponent(match?.[1] ?? '') !== kc.realm) {
        problems.push({ path: 'keycloak.realm', expected: `the realm named in keycloak.issuer (${decodeURIComponent(match?.[1] ?? '')})`, received: renderValue(kc.realm) })
      }
      if (url.search !== '' || url.hash !== '') {
        problems.push({ path: 'keycloak.issuer', expected: 'a URL without query or fragment', received: renderValue(kc.issuer) })
      }
    }
  }
  if (kind === 'generic') problems.push(...keycloakOnlyProblems(explicit))
  if (kc?.client_auth_method === 'private_key_jwt' && kc.client_private_key === undefined) {
    problems.push({ path: 'keycloak.client_private_key', expected: 'a private key (PEM or JWK) when keycloak.client_auth_method is private_key_jwt', received: 'nothing' })
  }
  if ((kc?.client_auth_method === 'client_secret_basic' || kc?.client_auth_method === 'client_secret_post') && explicit.keycloak !== undefined &&
    (explicit.keycloak as { client_auth_method?: unknown }).client_auth_method !== undefined && kc.client_secret === undefined) {
    problems.push({ path: 'keycloak.client_secret', expected: `a secret when keycloak.client_auth_method is ${kc.client_auth_method}`, received: 'nothing' })
  }
  const ha = kc?.ha?.enabled === true
  if (kc !== undefined && kind === 'keycloak' && !ha && kc.server === undefined) {
    problems.push({ path: 'keycloak.server', expected: 'a value (this key is required unless keycloak.ha.enabled): the back-channel base URL', received: 'nothing' })
  }
  if (kc?.server !== undefined && parseUrl(kc.server) === null) {
    problems.push({ path: 'keycloak.server', expected: 'a valid URL', received: renderValue(kc.server) })
  }
  if (ha && (kc?.ha?.servers ?? []).length === 0) {
    problems.push({ path: 'keycloak.ha.servers', expected: 'at least one server when keycloak.ha.enabled is true', received: 'an empty list' })
  }
  const seen = new Set<string>()
  ;(kc?.ha?.servers ?? []).forEach((entry, i) => {
    if (entry.server === undefined) return
    const url = parseUrl(entry.server)
    if (url === null) problems.push({ path: `keycloak.ha.servers[${i}].server`, expected: 'a valid URL', received: renderValue(entry.server) })
    const key = entry.server.replace(/\/+$/, '')
    if (seen.has(key)) problems.push({ path: `keycloak.ha.servers[${i}].server`, expected: 'a server not listed before', received: renderValue(entry.server) })
    seen.add(key)
  })
  if (config.upstream?.url !== undefined && parseUrl(config.upstream.url) === null) {
    problems.push({ path: 'upstream.url', expected: 'a valid URL', received: renderValue(config.upstream.url) })
  }
  config.secrets?.encryption_keys?.forEach((key, i) => {
    if (decodeKey(key) === null) problems.push({ path: `secrets.encryption_keys[${i}]`, expected: '32 bytes written as 64 hex digits or 43-44 base64 characters (openssl rand -base64 32)', received: '[redacted]' })
  })
  config.secrets?.cookie_keys?.forEach((key, i) => {
    if (key.length < 32) problems.push({ path: `secrets.cookie_keys[${i}]`, expected: 'at least 32 characters (openssl rand -base64 32)', received: '[redacted]' })
  })
  const trusted = config.server?.trust_proxy
  if (Array.isArray(trusted)) {
    trusted.forEach((entry, i) => {
      const expected = trustProxyEntryProblem(entry)
      if (expected !== null) problems.push({ path: `server.trust_proxy[${i}]`, expected, received: renderValue(entry) })
    })
  }
  config.forward_auth?.trusted_proxies?.forEach((entry, i) => {
    const expected = trustProxyEntryProblem(entry)
    if (expected !== null) problems.push({ path: `forward_auth.trusted_proxies[${i}]`, expected, received: renderValue(entry) })
  })
  const s = config.server
  const a = config.admin
  const collide = (x: { port?: number, host?: string } | undefined, y: { port?: number, host?: string } | undefined): boolean =>
    x?.port !== undefined && x.port !== 0 && x.port === y?.port && (x.host === y.host || x.host === '0.0.0.0' || y.host === '0.0.0.0')
  if (collide(s, a)) problems.push({ path: 'admin.port', expected: 'a port other than server.port', received: renderValue(a?.port) })
  const redis = config.store?.redis
  if (redis?.url !== undefined && parseUrl(redis.url) === null) problems.push({ path: 'store.redis.url', expected: 'a redis:// or rediss:// URL', received: '[redacted]' })
  if ((redis?.sentinels?.length ?? 0) > 0 && redis?.name === undefined) problems.push({ path: 'store.redis.name', expected: 'the Sentinel master group name when store.redis.sentinels are given', received: 'nothing' })
  const g = config.grpc
  if (g?.enabled === true) {
    if (collide(g, s)) problems.push({ path: 'grpc.port', expected: 'a port other than server.port', received: renderValue(g.port) })
    if (collide(g, a)) problems.push({ path: 'grpc.port', expected: 'a port other than admin.port', received: renderValue(g.port) })
  }
  problems.push(...notificationProblems(config))
  return problems
}

// Alerts and password reset: what each channel needs before it can send anything.
function notificationProblems (config: CrossFieldInput): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const alerts = config.alerts
  const mailNeeded = (why: string): void => {
    if (config.smtp?.host === undefined) problems.push({ path: 'smtp.host', expected: `an SMTP server when ${why}`, received: 'nothing' })
    if (config.smtp?.from === undefined) problems.push({ path: 'smtp.from', expected: `a From address when ${why}`, received: 'nothing' })
  }
  if (alerts?.webhook?.enabled === true && alerts.webhook.url === undefined) {
    problems.push({ path: 'alerts.webhook.url', expected: 'a URL when alerts.webhook.enabled is true', received: 'nothing' })
  }
  if (alerts?.email?.enabled === true) {
    if ((alerts.email.to ?? []).length === 0) problems.push({ path: 'alerts.email.to', expected: 'at least one recipient when alerts.email.enabled is true', received: 'an empty list' })
    mailNeeded('alerts.email.enabled is true')
  }
  const warning = alerts?.sync_queue_warning_threshold
  const critical = alerts?.sync_queue_critical_threshold
  if (warning !== undefined && critical !== undefined && critical < warning) {
    problems.push({ path: 'alerts.sync_queue_critical_threshold', expected: `a number at least alerts.sync_queue_warning_threshold (${warning})`, received: renderValue(critical) })
  }
  if (alerts?.timezone !== undefined && !validTimeZone(alerts.timezone)) {
    problems.push({ path: 'alerts.timezone', expected: 'an IANA time zone such as UTC or Europe/Berlin', received: renderValue(alerts.timezone) })
  }
  if (config.password_reset?.enabled === true) {
    mailNeeded('password_reset.enabled is true')
    // Reset links are built from public_url alone: a link built from the request's Host header
    // would let anyone who can send a request name the host the token is mailed to (password
    // reset poisoning, OWASP Forgot Password Cheat Sheet).
    if (config.server?.public_url === undefined) problems.push({ path: 'server.public_url', expected: 'the public URL of the app when password_reset.enabled is true (reset links are built from it)', received: 'nothing' })
  }
  return problems
}

/** Whether `zone` is a time zone this runtime knows (IANA names, through Intl). */
export function validTimeZone (zone: string): boolean {
  // The default needs no check; the first Intl.DateTimeFormat with a time zone loads ICU's zone
  // data, about 40 ms of every start-up (npm run bench's cold start).
  if (zone === 'UTC') return true
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone: zone }).format(0)
    return true
  } catch {
    return false
  }
}

/** The names proxy-addr (Fastify's `trustProxy`) expands to ranges: loopback, link-local, private. */
export const TRUST_PROXY_NAMES: readonly string[] = ['loopback', 'linklocal', 'uniquelocal']

const TRUSTED_PROXY_FORMS = 'an IP address, a CIDR range (10.0.0.0/8, fd00::/8), an IPv4 address/netmask, or one of loopback, linklocal, uniquelocal'

/**
 * What is wrong with one `server.trust_proxy` entry, as the expectation to report; null when
 * Fastify will take it. Fastify compiles the list with @fastify/proxy-addr at start-up and
 * throws on an entry it cannot parse, so serve would exit where validate said yes. This
 * accepts the subset of proxy-addr's forms written canonically: `net.isIP` addresses
 * (proxy-addr's ipaddr.js also reads `10.1` or `0x0a.0.0.1`, which no one means), a prefix
 * length from 1 to 32 (IPv4) or 128 (IPv6) (proxy-addr refuses /0: `true` trusts every peer),
 * an IPv4 netmask with contiguous ones, and proxy-addr's three names.
 */
export function trustProxyEntryProblem (entry: string): string | null {
  if (TRUST_PROXY_NAMES.includes(entry)) return null
  if (entry.includes(',')) return 'one address or range per list item ([a, b], not "a,b")'
  const slash = entry.lastIndexOf('/')
  const address = slash === -1 ? entry : entry.slice(0, slash)
  const family = isIP(address)
  if (family === 0) return TRUSTED_PROXY_FORMS
  if (slash === -1) return null
  const range = entry.slice(slash + 1)
  const max = family === 4 ? 32 : 128
  if (/^\d{1,3}$/.test(range)) {
    const bits = Number(range)
    return bits >= 1 && bits <= max ? null : `a prefix length from 1 to ${max} after the /${bits === 0 ? ' (use true to trust every peer)' : ''}`
  }
  if (family === 4 && isIP(range) === 4) {
    const mask = range.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0)
    const ones = 32 - Math.log2(2 ** 32 - mask)
    return mask !== 0 && Number.isInteger(ones) ? null : 'a netmask of contiguous ones after the / (255.255.0.0), or a prefix length from 1 to 32'
  }
  return `a prefix length from 1 to ${max} after the /`
}

function parseUrl (value: string): URL | null {
  try {
    return new URL(value)
  } catch {
    return null
  }
}

/** The realm named by a Keycloak issuer URL (`…/realms/{realm}`). */
/**
 * `keycloak.provider` resolved: `keycloak` and `generic` as given; `auto` is keycloak when the
 * issuer is a Keycloak realm URL (`…/realms/{realm}`), generic otherwise.
 */
export function providerKindOf (issuer: string, provider: string | undefined): 'keycloak' | 'generic' {
  if (provider === 'keycloak' || provider === 'generic') return provider
  const url = parseUrl(issuer)
  return url !== null && /\/realms\/[^/]+\/?$/.test(url.pathname) ? 'keycloak' : 'generic'
}

// Settings that only mean something with Keycloak's Admin API (the sync queue replays to it),
// reported by path when a generic provider's configuration sets them.
const KEYCLOAK_ONLY: Array<[path: string, why: string]> = [
  ['keycloak.realm', 'nothing (realms are Keycloak\'s; a generic provider has none)'],
  ['keycloak.admin', 'nothing (the Admin API is Keycloak\'s; a generic provider has none)'],
  ['sync', 'nothing (the sync queue replays identity writes to Keycloak\'s Admin API)'],
  ['local_auth.queue_password_changes', 'nothing (password changes are local only with a generic provider)']
]

function keycloakOnlyProblems (explicit: Record<string, unknown>): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  for (const [path, expected] of KEYCLOAK_ONLY) {
    let node: unknown = explicit
    for (const part of path.split('.')) node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[part] : undefined
    if (node === undefined) continue
    const keys = node !== null && typeof node === 'object' && !Array.isArray(node) ? Object.keys(node) : null
    if (keys !== null && keys.length === 0) continue
    for (const key of keys ?? ['']) {
      const full = key === '' ? path : `${path}.${key}`
      const value = key === '' ? node : (node as Record<string, unknown>)[key]
      problems.push({ path: full, expected: `${expected}; keycloak.provider is generic`, received: renderValue(value) })
    }
  }
  return problems
}

export function realmOfIssuer (issuer: string): string {
  const match = /\/realms\/([^/]+)\/?$/.exec(new URL(issuer).pathname)
  return decodeURIComponent(match?.[1] ?? '')
}

/** A YAML parser message without the position the caller reports itself. */
export function yamlErrorText (error: { message: string, code: string }): string {
  return (error.message.split('\n')[0] ?? error.code).replace(/ at line \d+, column \d+:?$/, '')
}
