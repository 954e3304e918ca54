import t from 'tap'
import { writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { runGatehouse, runInProcess } from '../fixtures/cli.ts'

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
  // serve as a real process (what main.ts does with the code), config validate in-process.
  for (const [command, run] of [[['config', 'validate'], runInProcess], [['serve'], runGatehouse]] as const) {
    const result = await run([...command, '-c', path])
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
  const validate = await runInProcess(['config', 'validate', '-c', path], { env: { APP_SECRET: 'hunter2-secret' } })
  t.equal(validate.code, 0)
  t.match(validate.stdout, `configuration is valid: ${path} (environment: none; 0 policy rules from 0 files)`)
  const show = await runInProcess(['config', 'show', '--json'], { env: { APP_SECRET: 'hunter2-secret', GATEHOUSE_CONFIG: path } })
  t.equal(show.code, 0)
  const shown = JSON.parse(show.stdout) as { keycloak: { client_secret: string, realm: string }, server: { port: number } }
  t.equal(shown.keycloak.client_secret, '[redacted]')
  t.equal(shown.keycloak.realm, 'acme')
  t.equal(shown.server.port, 4180)
  t.notMatch(show.stdout, 'hunter2')
  const yaml = await runInProcess(['config', 'show', '-c', path], { env: { APP_SECRET: 'hunter2-secret' } })
  t.match(yaml.stdout, /client_secret: "?\[redacted\]"?/)
  t.notMatch(yaml.stdout, 'hunter2')
})

t.test('an invalid policy file fails validation with exit 2', async (t) => {
  const dir = t.testdir({ policies: { 'a.yaml': 'rules:\n  - paths: [/x]\n    allow: everyone\n' } })
  const path = join(dir, 'config.yaml')
  writeFileSync(path, GOOD.replace('database:', 'policies: { dir: ./policies }\ndatabase:'))
  const result = await runInProcess(['config', 'validate', '-c', path], { env: { APP_SECRET: 's' } })
  t.equal(result.code, 2)
  t.match(result.stderr, 'a.yaml (line 3): rules[0].allow: expected public, authenticated or deny, received string "everyone"', 'file, line and key path')
})

t.test('usage errors exit 2 with one line; --help, --version and version exit 0', async (t) => {
  const cases: Array<[string[], string]> = [
    [['frobnicate'], 'gatehouse: unknown command "frobnicate"; run gatehouse --help\n'],
    [['config', 'validate', '--nope'], 'gatehouse: unknown option --nope for "config validate"; run gatehouse config --help\n'],
    [['config'], 'gatehouse: config needs a subcommand: validate or show; run gatehouse config --help\n'],
    [['config', 'check'], 'gatehouse: unknown config subcommand "check": use validate or show; run gatehouse config --help\n'],
    [['config', 'validate', '-c'], 'gatehouse: option -c needs a value; run gatehouse config --help\n'],
    [['serve', '--json'], 'gatehouse: option --json does not apply to "serve"; run gatehouse serve --help\n'],
    [[], 'gatehouse: no command given; run gatehouse --help\n']
  ]
  for (const [args, message] of cases) {
    const result = await runInProcess(args)
    t.equal(result.code, 2, args.join(' '))
    t.equal(result.stderr, message)
    t.equal(result.stdout, '')
  }
  const help = await runInProcess(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, 'usage: gatehouse <command> [options]')
  for (const args of [['version'], ['--version']]) {
    const version = await runInProcess(args)
    t.equal(version.code, 0)
    t.match(version.stdout, /^\d+\.\d+\.\d+\n$/)
  }
})
