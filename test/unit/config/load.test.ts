import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig, parseConfig } from '../../../src/config/load.ts'
import { ConfigError } from '../../../src/errors.ts'

// Keys for tests only: fixed, so reports stay byte-for-byte comparable.
const SECRETS = `secrets: { encryption_keys: ['${'00'.repeat(32)}'], cookie_keys: [test-cookie-key-test-cookie-key-0000] }`

const MINIMAL = `
${SECRETS}
upstream:
  url: http://127.0.0.1:8080
keycloak:
  issuer: https://sso.example.com/realms/acme
  server: http://keycloak:8080
  client_id: app
`

function problemsOf (fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: expected ${p.expected}, received ${p.received}`)
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('a minimal file gets every default and the realm from the issuer', async (t) => {
  const config = parseConfig(MINIMAL, { path: '/etc/gatehouse/config.yaml', env: {} })
  t.equal(config.server.port, 4180)
  t.equal(config.server.prefix, '/_gatehouse')
  t.equal(config.admin.host, '127.0.0.1')
  t.equal(config.keycloak.timeout_ms, 2000)
  t.equal(config.keycloak.realm, 'acme')
  t.equal(config.tokens.clock_skew_seconds, 30)
  t.same(config.tokens.algorithms, ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'])
  t.equal(config.headers.user, 'X-Auth-Request-User')
  t.equal(config.policies.default, 'authenticated')
  t.equal(config.feature_flags.keycloak_enabled, true)
  t.equal(config.base_dir, '/etc/gatehouse')
  t.equal(config.environment, null)
  t.ok(Object.isFrozen(config.keycloak.jwks), 'the result is deep-frozen')
})

t.test('every problem is reported at once with its full key path', async (t) => {
  const text = `
${SECRETS}
upstream:
  url: http://127.0.0.1:8080
  timeout_ms: soon
keycloak:
  issuer: https://sso.example.com/realms/acme
  server: http://keycloak:8080
  client_id: app
  client_secret: \${APP_SECRET}
  timout_ms: 10
tokens:
  algorithms: [RS256, HS256]
server:
  port: 70000
`
  const problems = problemsOf(() => parseConfig(text, { path: 'c.yaml', env: {} }))
  t.same(problems.sort(), [
    'keycloak.client_secret: expected environment variable APP_SECRET to be set (referenced as ${APP_SECRET}), received an unset variable',
    'keycloak.timout_ms: expected no such key (did you mean timeout_ms?), received an unknown key',
    'server.port: expected a number <= 65535, received number 70000',
    'tokens.algorithms[1]: expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA (asymmetric only), received string "HS256"',
    'upstream.timeout_ms: expected an integer, received string "soon"'
  ])
})

t.test('a missing required key is named', async (t) => {
  const problems = problemsOf(() => parseConfig('keycloak:\n  issuer: https://sso.example.com/realms/a\n  server: http://k\n', { path: 'c.yaml', env: {} }))
  t.same(problems.sort(), [
    'keycloak.client_id: expected a value (this key is required), received nothing',
    'secrets: expected a value (this key is required), received nothing',
    'upstream: expected a value (this key is required), received nothing'
  ])
})

t.test('${VAR} and ${VAR:-default} are substituted in values, keeping types', async (t) => {
  const text = `${MINIMAL}
server:
  port: \${PORT}
  host: \${HOST:-127.0.0.2}
  trust_proxy: \${TRUST:-false}
database:
  path: \${DATA:-./data}/gh.db
log:
  level: \${LEVEL:-warn}
`
  const config = parseConfig(text.replace('client_id: app', 'client_id: app\n  client_secret: ${SECRET}'), { path: 'c.yaml', env: { PORT: '8443', SECRET: '12345', LEVEL: '' } })
  t.equal(config.server.port, 8443, 'a whole reference is re-read as a YAML scalar')
  t.equal(config.server.host, '127.0.0.2')
  t.equal(config.server.trust_proxy, false)
  t.equal(config.database.path, './data/gh.db', 'a reference inside a string is spliced')
  t.equal(config.log.level, 'warn', 'an empty variable takes the default, as in a shell')
  t.equal(config.keycloak.client_secret, '12345', 'a numeric-looking secret stays a string')
})

t.test('a variable cannot add keys: its value is never parsed as YAML structure', async (t) => {
  const config = parseConfig(MINIMAL.replace('client_id: app', 'client_id: ${ID}'), { path: 'c.yaml', env: { ID: 'x\nadmin:\n  port: 1' } })
  t.equal(config.keycloak.client_id, 'x\nadmin:\n  port: 1')
  t.equal(config.admin.port, 9180)
})

t.test('$$ writes a literal dollar', async (t) => {
  const config = parseConfig(MINIMAL + '  client_secret: "pa$$' + '{word}"\n', { path: 'c.yaml', env: {} })
  t.equal(config.keycloak.client_secret, 'pa$' + '{word}', 'so $${word} is the text ${word}, not a reference')
})

t.test('GATEHOUSE_ENV picks an overlay that merges over the base', async (t) => {
  const text = `${MINIMAL}
log:
  level: info
environments:
  staging:
    log: { level: debug }
    keycloak: { audiences: [other] }
  production:
    server: { port: 8080 }
`
  const staging = parseConfig(text, { path: 'c.yaml', env: { GATEHOUSE_ENV: 'staging' } })
  t.equal(staging.environment, 'staging')
  t.equal(staging.log.level, 'debug')
  t.same(staging.keycloak.audiences, ['other'])
  t.equal(staging.keycloak.client_id, 'app', 'keys the overlay does not name keep the base value')
  t.equal(staging.server.port, 4180)
  const production = parseConfig(text, { path: 'c.yaml', env: { GATEHOUSE_ENV: 'production' } })
  t.equal(production.server.port, 8080)
  t.equal(production.log.level, 'info')
  const none = parseConfig(text, { path: 'c.yaml', env: {} })
  t.equal(none.environment, null)
  t.equal(none.server.port, 4180)
})

t.test('an overlay problem is reported under environments.<name>, selected or not', async (t) => {
  const text = `${MINIMAL}
environments:
  staging:
    log: { levle: debug }
  development:
    server: { port: -1 }
`
  const problems = problemsOf(() => parseConfig(text, { path: 'c.yaml', env: { GATEHOUSE_ENV: 'staging' } }))
  t.same(problems.sort(), [
    'environments.development.server.port: expected a number >= 0, received number -1',
    'environments.staging.log.levle: expected no such key (did you mean level?), received an unknown key'
  ])
})

t.test('an unknown GATEHOUSE_ENV or environment name is refused', async (t) => {
  t.same(problemsOf(() => parseConfig(MINIMAL, { path: 'c.yaml', env: { GATEHOUSE_ENV: 'prod' } })),
    ['GATEHOUSE_ENV: expected one of production, staging, development, received "prod"'])
  t.same(problemsOf(() => parseConfig(`${MINIMAL}\nenvironments:\n  qa: {}\n`, { path: 'c.yaml', env: {} })),
    ['environments.qa: expected no such key (known keys: production, staging, development), received an unknown key'])
})

t.test('cross-field checks: a Keycloak issuer must be a realm URL, the realm must agree, listeners must differ', async (t) => {
  const text = `
${SECRETS}
upstream: { url: 'http://127.0.0.1:1' }
keycloak: { issuer: 'https://sso.example.com/oidc', provider: keycloak, server: 'http://k', client_id: a }
`
  t.same(problemsOf(() => parseConfig(text, { path: 'c.yaml', env: {} })),
    ['keycloak.issuer: expected a Keycloak realm URL ending in /realms/{realm} (keycloak.provider is keycloak; set generic for another provider), received string "https://sso.example.com/oidc"'])
  const generic = parseConfig(text.replace('provider: keycloak, server: \'http://k\', ', ''), { path: 'c.yaml', env: {} })
  t.equal(generic.keycloak.kind, 'generic', 'any other issuer is a generic provider')
  t.equal(generic.keycloak.server, 'https://sso.example.com/oidc', 'whose back channel is the issuer itself')
  const mismatch = MINIMAL.replace('client_id: app', 'client_id: app\n  realm: other')
  t.same(problemsOf(() => parseConfig(mismatch, { path: 'c.yaml', env: {} })),
    ['keycloak.realm: expected the realm named in keycloak.issuer (acme), received string "other"'])
  const clash = `${MINIMAL}\nserver: { port: 9000 }\nadmin: { port: 9000, host: 0.0.0.0 }\n`
  t.same(problemsOf(() => parseConfig(clash, { path: 'c.yaml', env: {} })),
    ['admin.port: expected a port other than server.port, received number 9000'])
})

t.test('a generic provider: every Keycloak-only setting is reported by its key path', async (t) => {
  const text = `
${SECRETS}
upstream: { url: 'http://127.0.0.1:1' }
keycloak: { issuer: 'https://idp.example.com', client_id: a, realm: acme, admin: { client_id: svc } }
sync: { enabled: true, interval_seconds: 5 }
local_auth: { queue_password_changes: true }
`
  t.same(problemsOf(() => parseConfig(text, { path: 'c.yaml', env: {} })), [
    'keycloak.realm: expected nothing (realms are Keycloak\'s; a generic provider has none); keycloak.provider is generic, received string "acme"',
    'keycloak.admin.client_id: expected nothing (the Admin API is Keycloak\'s; a generic provider has none); keycloak.provider is generic, received string "svc"',
    'sync.enabled: expected nothing (the sync queue replays identity writes to Keycloak\'s Admin API); keycloak.provider is generic, received boolean true',
    'sync.interval_seconds: expected nothing (the sync queue replays identity writes to Keycloak\'s Admin API); keycloak.provider is generic, received number 5',
    'local_auth.queue_password_changes: expected nothing (password changes are local only with a generic provider); keycloak.provider is generic, received boolean true'
  ])
})

t.test('secret values never appear in problem reports', async (t) => {
  const text = MINIMAL.replace('client_id: app', 'client_id: app\n  client_secret: ""')
  const problems = problemsOf(() => parseConfig(text, { path: 'c.yaml', env: {} }))
  t.same(problems, ['keycloak.client_secret: expected a non-empty string, received [redacted]'])
})

t.test('YAML syntax errors and duplicate keys name the line', async (t) => {
  const problems = problemsOf(() => parseConfig('server:\n  port: 1\n  port: 2\n', { path: 'c.yaml', env: {} }))
  t.equal(problems.length, 1)
  t.match(problems[0], /^\(line 3, column 3\): expected valid YAML, received Map keys must be unique/)
  t.same(problemsOf(() => parseConfig('', { path: 'c.yaml', env: {} })), ['(top level): expected a mapping of sections, received an empty file'])
})

t.test('a missing file is ERR_CONFIG_READ', async (t) => {
  const dir = t.testdir()
  t.throws(() => loadConfig({ path: join(dir, 'nope.yaml'), env: {} }), { code: 'ERR_CONFIG_READ' })
  writeFileSync(join(dir, 'ok.yaml'), MINIMAL)
  t.equal(loadConfig({ path: join(dir, 'ok.yaml'), env: {} }).base_dir, dir)
})

t.test('keycloak.ha: the servers list replaces keycloak.server, and is checked', async (t) => {
  const ha = `
${SECRETS}
upstream: { url: 'http://127.0.0.1:8080' }
keycloak:
  issuer: https://sso.example.com/realms/acme
  client_id: app
  ha:
    enabled: true
    strategy: round_robin
    servers:
      - server: http://kc1:8080
      - server: http://kc2:8080
        priority: 2
        weight: 20
`
  const config = parseConfig(ha, { path: 'c.yaml', env: {} })
  t.same(config.keycloak.ha.servers, [{ server: 'http://kc1:8080', priority: 1, weight: 100 }, { server: 'http://kc2:8080', priority: 2, weight: 20 }])
  t.same(config.keycloak.resilience, { enabled: true, failure_threshold: 3, cooldown_seconds: 60, token_grace_period_hours: 24, health_check_cache_seconds: 30, allow_offline_mode: true })
  t.same(problemsOf(() => parseConfig(ha.replace(/ {4}servers:[\s\S]*$/, '    servers: []\n'), { path: 'c.yaml', env: {} })),
    ['keycloak.ha.servers: expected at least one server when keycloak.ha.enabled is true, received an empty list'])
  t.same(problemsOf(() => parseConfig(ha.replace('http://kc2:8080', 'http://kc1:8080/'), { path: 'c.yaml', env: {} })),
    ['keycloak.ha.servers[1].server: expected a server not listed before, received string "http://kc1:8080/"'])
  t.same(problemsOf(() => parseConfig(ha.replace('strategy: round_robin', 'strategy: fastest'), { path: 'c.yaml', env: {} })),
    ['keycloak.ha.strategy: expected priority, round_robin or random, received string "fastest"'])
  t.same(problemsOf(() => parseConfig(MINIMAL.replace('  server: http://keycloak:8080\n', ''), { path: 'c.yaml', env: {} })),
    ['keycloak.server: expected a value (this key is required unless keycloak.ha.enabled): the back-channel base URL, received nothing'])
})
