import t from 'tap'
import { writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { runGatehouse } from '../fixtures/cli.ts'

const SECRETS = `secrets: { encryption_keys: ['${'11'.repeat(32)}'], cookie_keys: [cli-test-cookie-key-cli-test-cookie-key] }`

const GOOD = `
${SECRETS}
upstream: { url: 'http://127.0.0.1:8080' }
keycloak:
  issuer: https://sso.example.com/realms/acme
  server: http://keycloak:8080
  client_id: app
  client_secret: \${APP_SECRET}
database: { path: ./g.db }
`

t.test('a bad config.yaml prints every key path and exits 2 without starting anything', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'config.yaml')
  writeFileSync(path, `
${SECRETS}
server:
  port: eighty
upstream: { url: 'http://127.0.0.1:8080', retries: 3 }
keycloak:
  issuer: https://sso.example.com/realms/acme
  server: http://keycloak:8080
  client_id: app
  client_secret: \${APP_SECRET}
database: { path: ./g.db }
`)
  for (const command of [['config', 'validate'], ['serve']]) {
    const result = await runGatehouse([...command, '-c', path])
    t.equal(result.code, 2, `${command.join(' ')} exits 2`)
    t.equal(result.stdout, '')
    const lines = result.stderr.trim().split('\n')
    t.equal(lines[0], `gatehouse: invalid configuration ${path}:`)
    t.same(lines.slice(1).sort(), [
      '  keycloak.client_secret: expected environment variable APP_SECRET to be set (referenced as ${APP_SECRET}), received an unset variable',
      '  server.port: expected an integer, received string "eighty"',
      '  upstream.retries: expected no such key (known keys: url, timeout_ms, connections, keep_alive_ms, pass_host_header, websocket), received an unknown key'
    ])
    t.notOk(existsSync(join(dir, 'g.db')), 'no database was created')
  }
})

t.test('config validate and config show accept a good file; show redacts secrets', async (t) => {
  const dir = t.testdir({ policies: {} })
  const path = join(dir, 'config.yaml')
  writeFileSync(path, GOOD)
  const validate = await runGatehouse(['config', 'validate', '-c', path], { env: { APP_SECRET: 'hunter2-secret' } })
  t.equal(validate.code, 0)
  t.match(validate.stdout, `configuration is valid: ${path} (environment: none; 0 policy rules from 0 files)`)
  const show = await runGatehouse(['config', 'show', '--json'], { env: { APP_SECRET: 'hunter2-secret', GATEHOUSE_CONFIG: path } })
  t.equal(show.code, 0)
  const shown = JSON.parse(show.stdout) as { keycloak: { client_secret: string, realm: string }, server: { port: number } }
  t.equal(shown.keycloak.client_secret, '[redacted]')
  t.equal(shown.keycloak.realm, 'acme')
  t.equal(shown.server.port, 4180)
  t.notMatch(show.stdout, 'hunter2')
  const yaml = await runGatehouse(['config', 'show', '-c', path], { env: { APP_SECRET: 'hunter2-secret' } })
  t.match(yaml.stdout, /client_secret: "?\[redacted\]"?/)
  t.notMatch(yaml.stdout, 'hunter2')
})

t.test('an invalid policy file fails validation with exit 2', async (t) => {
  const dir = t.testdir({ policies: { 'a.yaml': 'rules:\n  - paths: [/x]\n    allow: everyone\n' } })
  const path = join(dir, 'config.yaml')
  writeFileSync(path, GOOD.replace('database:', 'policies: { dir: ./policies }\ndatabase:'))
  const result = await runGatehouse(['config', 'validate', '-c', path], { env: { APP_SECRET: 's' } })
  t.equal(result.code, 2)
  t.match(result.stderr, 'a.yaml: rules[0].allow: expected public, authenticated or deny, received string "everyone"')
})

t.test('usage errors exit 2; --help and version exit 0', async (t) => {
  const unknown = await runGatehouse(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, 'unknown command "frobnicate"')
  const badOption = await runGatehouse(['config', 'validate', '--nope'])
  t.equal(badOption.code, 2)
  t.match(badOption.stderr, "Unknown option '--nope'")
  const help = await runGatehouse(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, 'usage: gatehouse <command> [options]')
  const version = await runGatehouse(['version'])
  t.equal(version.code, 0)
  t.match(version.stdout, /^\d+\.\d+\.\d+/)
})
