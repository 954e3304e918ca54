import t from 'tap'
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { DEFAULT_HEADERS, DEFAULT_PREFIX, DEFAULT_SERVER_PORT } from '../../../src/config/schema.ts'
import { findingsOf, isObject, type FieldTables } from './field-table.ts'
import { goRegExp } from '../../fixtures/traefik-forward-auth.ts'

// No Traefik binary runs on these machines, so deploy/traefik/dynamic.yaml is checked here:
// parsed, every key looked up in a table of Traefik's dynamic-configuration names, and the
// settings Gatehouse depends on asserted. (test/integration/forward-auth.test.ts also runs the
// file's middleware settings, the way Traefik's forward.go applies them, against Gatehouse.)
//
// The ForwardAuth names are protocol-facts §E.2. Routers, services and the file's layout are
// not in protocol-facts: they are the yaml names of traefik/traefik
// pkg/config/dynamic/http_config.go (HTTPConfiguration, Router, Service, ServersLoadBalancer,
// Server), the fields this file uses.

const FACTS = 'protocol-facts §E.2'
const TRAEFIK = 'traefik pkg/config/dynamic/http_config.go'

const TABLES: FieldTables = {
  messages: {
    Dynamic: { source: TRAEFIK, fields: { http: 'HTTPConfiguration' } },
    HTTPConfiguration: { source: TRAEFIK, fields: { routers: 'map:Router', middlewares: 'map:Middleware', services: 'map:Service' } },
    Router: { source: TRAEFIK, fields: { entryPoints: 'string[]', middlewares: 'string[]', service: 'string', rule: 'string', priority: 'int' } },
    Service: { source: TRAEFIK, fields: { loadBalancer: 'ServersLoadBalancer' } },
    ServersLoadBalancer: { source: TRAEFIK, fields: { servers: 'Server[]', passHostHeader: 'bool' } },
    Server: { source: TRAEFIK, fields: { url: 'string' } },
    Middleware: { source: 'traefik pkg/config/dynamic/middlewares.go (forwardAuth only)', fields: { forwardAuth: 'ForwardAuth' } },
    ForwardAuth: {
      source: FACTS,
      fields: {
        address: 'string',
        trustForwardHeader: 'bool',
        authResponseHeaders: 'string[]',
        authResponseHeadersRegex: 'string',
        authRequestHeaders: 'string[]',
        addAuthCookiesToResponse: 'string[]',
        preserveRequestMethod: 'bool',
        forwardBody: 'bool',
        maxBodySize: 'int',
        preserveLocationHeader: 'bool',
        headerField: 'string',
        tls: 'unchecked'
      }
    }
  }
}

type Yaml = Record<string, unknown>

const dynamic = parse(readFileSync(new URL('../../../deploy/traefik/dynamic.yaml', import.meta.url), 'utf8')) as unknown
const http = isObject(dynamic) && isObject(dynamic.http) ? dynamic.http : {}
const routers = (isObject(http.routers) ? http.routers : {}) as Record<string, Yaml>
const middlewares = (isObject(http.middlewares) ? http.middlewares : {}) as Record<string, Yaml>
const services = (isObject(http.services) ? http.services : {}) as Record<string, Yaml>
const strings = (value: unknown): string[] => Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : []

t.test('dynamic.yaml: every key it uses is one Traefik has', async (t) => {
  const findings = findingsOf(TABLES, dynamic, 'Dynamic')
  t.same(findings, [], findings.join('\n'))
})

t.test('dynamic.yaml: the field check reports a misspelt ForwardAuth option', async (t) => {
  const broken = structuredClone(dynamic) as { http: { middlewares: Record<string, { forwardAuth: Yaml }> } }
  const [name] = Object.keys(broken.http.middlewares)
  const fa = broken.http.middlewares[name ?? '']?.forwardAuth ?? {}
  fa.authResponseHeader = fa.authResponseHeaders
  delete fa.authResponseHeaders
  t.same(findingsOf(TABLES, broken, 'Dynamic'), [`$.http.middlewares.${name ?? ''}.forwardAuth.authResponseHeader: not a field of ForwardAuth (${FACTS})`])
})

t.test('dynamic.yaml: the ForwardAuth middleware asks Gatehouse and copies exactly its identity headers', async (t) => {
  const entries = Object.entries(middlewares).filter(([, m]) => isObject(m.forwardAuth))
  t.equal(entries.length, 1, 'one ForwardAuth middleware')
  const fa = (entries[0]?.[1].forwardAuth ?? {}) as Yaml
  t.equal(fa.address, `http://gatehouse:${DEFAULT_SERVER_PORT}${DEFAULT_PREFIX}/auth`)
  t.equal(fa.trustForwardHeader, false, "written out, and false: Traefik describes the request it received, never the client's own X-Forwarded-Uri")
  const requestHeaders = strings(fa.authRequestHeaders).map((h) => h.toLowerCase())
  for (const header of ['authorization', 'cookie', 'accept']) t.ok(requestHeaders.includes(header), `authRequestHeaders includes ${header}`)
  t.same(strings(fa.authResponseHeaders).sort(), Object.values(DEFAULT_HEADERS).sort(), 'every identity header Gatehouse sets')

  const family = goRegExp(String(fa.authResponseHeadersRegex))
  for (const name of ['X-Auth-Request-User', 'X_auth_request_user', 'x-auth-request-anything', 'X-AUTH-REQUEST-ROLES']) t.ok(family.test(name), `the regex removes ${name}`)
  for (const name of ['Authorization', 'Cookie', 'X-Request-Id', 'X-Forwarded-User', 'My-X-Auth-Request-User']) t.notOk(family.test(name), `the regex leaves ${name}`)
})

t.test(`dynamic.yaml: ${DEFAULT_PREFIX}/ goes to Gatehouse without the middleware and wins over the app's catch-all`, async (t) => {
  const auth = Object.keys(middlewares)
  const own = Object.values(routers).find((r) => r.rule === `PathPrefix(\`${DEFAULT_PREFIX}/\`)`)
  const app = Object.values(routers).find((r) => r.rule === 'PathPrefix(`/`)')
  t.ok(own, 'a router for the prefix')
  t.ok(app, 'a catch-all router for the app')
  t.same(strings(own?.middlewares).filter((m) => auth.includes(m)), [], 'no ForwardAuth on the login pages')
  t.same(strings(app?.middlewares), auth, 'the app behind it')
  t.ok(Number(own?.priority) > Number(app?.priority), 'the prefix router has the higher priority')
  const url = (name: unknown): unknown => ((services[String(name)]?.loadBalancer as Yaml | undefined)?.servers as Yaml[] | undefined)?.[0]?.url
  t.equal(url(own?.service), `http://gatehouse:${DEFAULT_SERVER_PORT}`)
  t.ok(typeof url(app?.service) === 'string', 'the app service exists')
  for (const router of Object.values(routers)) t.same(strings(router.entryPoints), ['web'])
})
