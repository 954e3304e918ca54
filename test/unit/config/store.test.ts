import t from 'tap'
import { parseConfig } from '../../../src/config/load.ts'
import { ConfigError } from '../../../src/errors.ts'
import { redactConfig } from '../../../src/config/redact.ts'
import { connectionOptions } from '../../../src/store/redis-session-store.ts'

const BASE = `
secrets: { encryption_keys: ['${'00'.repeat(32)}'], cookie_keys: [test-cookie-key-test-cookie-key-0000] }
upstream: { url: 'http://127.0.0.1:8080' }
keycloak: { issuer: 'https://sso.example.com/realms/acme', server: 'http://keycloak:8080', client_id: app }
`

function problemsOf (text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(text, { path: 'c.yaml', env })
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: expected ${p.expected}, received ${p.received}`)
    throw err
  }
  return []
}

t.test('store defaults to sqlite, with the Redis defaults documented in the schema', async (t) => {
  const config = parseConfig(BASE, { path: 'c.yaml', env: {} })
  t.equal(config.store.sessions, 'sqlite')
  t.match(config.store.redis, { url: 'redis://127.0.0.1:6379', key_prefix: 'gatehouse:', connect_timeout_ms: 1000, command_timeout_ms: 250, failure_threshold: 3, cooldown_seconds: 5, sentinels: [] })
})

t.test('store.sessions takes sqlite or redis; the URL must be redis:// or rediss://; sentinels need a name', async (t) => {
  t.same(problemsOf(`${BASE}store: { sessions: memcached }`), ['store.sessions: expected sqlite or redis, received string "memcached"'])
  t.same(problemsOf(`${BASE}store: { sessions: redis, redis: { url: 'http://cache:6379' } }`), ['store.redis.url: expected a redis:// or rediss:// URL, received string "http://cache:6379"'])
  t.same(problemsOf(`${BASE}store: { sessions: redis, redis: { sentinels: [{ host: s1 }] } }`), ['store.redis.name: expected the Sentinel master group name when store.redis.sentinels are given, received nothing'])
  t.same(problemsOf(`${BASE}store: { sessions: redis, redis: { sentinels: [{ host: s1 }], name: primary } }`), [])
})

t.test('the ACL user and password come from the environment and are redacted by config show', async (t) => {
  const config = parseConfig(`${BASE}store: { sessions: redis, redis: { url: 'rediss://cache.internal:6380/2', username: '\${REDIS_USERNAME}', password: '\${REDIS_PASSWORD}' } }`, { path: 'c.yaml', env: { REDIS_USERNAME: 'gatehouse', REDIS_PASSWORD: 's3cret-redis-pass' } })
  t.equal(config.store.redis.username, 'gatehouse')
  t.notMatch(JSON.stringify(redactConfig(config)), 's3cret-redis-pass')
  const options = connectionOptions(config.store.redis)
  t.match(options, { host: 'cache.internal', port: 6380, db: 2, username: 'gatehouse', password: 's3cret-redis-pass', tls: { servername: 'cache.internal' }, enableOfflineQueue: false, commandTimeout: 250, connectTimeout: 1000 })
})

t.test('with sentinels, ioredis asks them for the primary of the name', async (t) => {
  const config = parseConfig(`${BASE}store: { sessions: redis, redis: { url: 'redis://ignored/1', sentinels: [{ host: s1, port: 26380 }, { host: s2 }], name: primary, sentinel_password: sp } }`, { path: 'c.yaml', env: {} })
  const options = connectionOptions(config.store.redis)
  t.match(options, { sentinels: [{ host: 's1', port: 26380 }, { host: 's2', port: 26379 }], name: 'primary', sentinelPassword: 'sp', db: 1 })
  t.equal(options.host, undefined)
})

t.test('rediss:// with sentinels: TLS to the Sentinels and the primary, each checked against its own name', async (t) => {
  const config = parseConfig(`${BASE}store: { sessions: redis, redis: { url: 'rediss://ignored/0', sentinels: [{ host: s1 }], name: primary, connect_timeout_ms: 700 } }`, { path: 'c.yaml', env: {} })
  const options = connectionOptions(config.store.redis)
  t.same(options.tls, {}, 'no servername taken from the URL\'s placeholder host')
  t.same(options.sentinelTLS, {})
  t.equal(options.enableTLSForSentinelMode, true)
  t.equal(options.sentinelCommandTimeout, 700, 'a dead Sentinel is given up on at the connect deadline')
})
