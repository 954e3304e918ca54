import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { grpcClient } from '../fixtures/grpc-client.ts'

// What `gatehouse`, `npm start` and the image run is the bundle `npm run build` makes
// (dist/bundle/, scripts/bundle.mjs), not the sources the other tests load. This file runs
// that program: files it finds beside its modules (package.json, migrations, protos), the
// validators compiled at build time, and the chunks it loads on demand.

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const BUNDLE = join(ROOT, 'dist/bundle/gatehouse.js')

/** The Node flags of `npm start`, which the build's code cache is made for (scripts/code-cache.mjs). */
function shippedNodeFlags (): string[] {
  const { scripts } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }
  const words = scripts.start.split(' ')
  return words.slice(1, words.indexOf('dist/bundle/gatehouse.js'))
}
const SHIPPED_FLAGS = shippedNodeFlags()

t.test('the image and the systemd units run Gatehouse under the Node flags of npm start', async (t) => {
  t.not(SHIPPED_FLAGS.length, 0, 'npm start names its flags')
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
  t.match(dockerfile, `ENTRYPOINT ${JSON.stringify(['node', ...SHIPPED_FLAGS, 'dist/bundle/gatehouse.js']).replaceAll(',', ', ')}`)
  for (const unit of ['gatehouse.service', 'gatehouse-sync.service']) {
    const commands = readFileSync(join(ROOT, 'deploy/systemd', unit), 'utf8').split('\n').filter((line) => /^ExecStart(Pre)?=/.test(line))
    t.not(commands.length, 0)
    for (const command of commands) t.match(command, `=/usr/bin/node ${SHIPPED_FLAGS.join(' ')} /opt/gatehouse/dist/bundle/gatehouse.js `, `${unit}: ${command}`)
  }
})

/** Why the bundle cannot be tested, or null: missing, or older than a source file. */
function bundleProblem (): string | null {
  if (!existsSync(BUNDLE)) return 'dist/bundle/gatehouse.js does not exist: run `npm run build`'
  const built = statSync(BUNDLE).mtimeMs
  const newer = (dir: string): string | undefined => readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .find((file) => file.endsWith('.ts') && statSync(join(dir, file)).mtimeMs > built)
  const stale = newer(join(ROOT, 'src'))
  return stale === undefined ? null : `dist/bundle/ is older than src/${stale}: run \`npm run build\``
}

const problem = bundleProblem()
if (problem !== null) {
  // .ci/run builds before it tests, so there a missing or stale bundle is a failure.
  if (process.env.CI === 'true') t.fail(`${problem}; CI=true runs every test, so this is a failure`)
  else t.pass('the bundle', { skip: problem })
} else {
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-bundle-'))
  t.teardown(() => { rmSync(work, { recursive: true, force: true }) })
  const run = (args: string[]): { status: number | null, stdout: string, stderr: string } => {
    const result = spawnSync(process.execPath, [BUNDLE, ...args], { cwd: work, encoding: 'utf8', env: { PATH: process.env.PATH } })
    return { status: result.status, stdout: result.stdout, stderr: result.stderr }
  }

  t.test('the code cache is taken under the shipped flags; under other flags the program compiles from source and runs', async (t) => {
    const rejected = (flags: string[], launcher = BUNDLE): string => spawnSync(process.execPath, [...flags, '-e', `process.stdout.write(String(require(${JSON.stringify(launcher)}).compile().script.cachedDataRejected))`], { encoding: 'utf8', env: { PATH: process.env.PATH } }).stdout
    t.equal(rejected(SHIPPED_FLAGS), 'false', `V8 takes dist/bundle/program.cache under ${SHIPPED_FLAGS.join(' ')}`)
    const other = ['--max-old-space-size=200']
    t.equal(rejected(other), 'true', 'and refuses it under other V8 flags')
    const result = spawnSync(process.execPath, [...other, BUNDLE, '--version'], { cwd: work, encoding: 'utf8', env: { PATH: process.env.PATH } })
    t.equal(result.status, 0, 'which only costs compiling from source')
    t.match(result.stdout, /^\d+\.\d+\.\d+/)

    // Another build's program of the same length beside this cache: V8 would check only the
    // length, so the launcher does not offer it the cache at all.
    const copy = join(work, 'other-build')
    mkdirSync(copy)
    for (const file of ['gatehouse.js', 'package.json', 'program.cache']) writeFileSync(join(copy, file), readFileSync(join(ROOT, 'dist/bundle', file)))
    const program = readFileSync(join(ROOT, 'dist/bundle/program.js'), 'latin1')
    const id = /gatehouse build ([0-9a-f-]{36})/.exec(program)?.[1] ?? ''
    t.equal(id.length, 36, 'program.js names its build')
    writeFileSync(join(copy, 'program.js'), program.replace(id, id.replace(/^./, (c) => c === 'a' ? 'b' : 'a')), 'latin1')
    t.equal(rejected(SHIPPED_FLAGS, join(copy, 'gatehouse.js')), 'undefined', 'no cache is offered to another build')
    writeFileSync(join(copy, 'program.js'), program, 'latin1')
    t.equal(rejected(SHIPPED_FLAGS, join(copy, 'gatehouse.js')), 'false', 'and the same build beside it takes it')
  })

  t.test('--version reads the package.json beside dist/', async (t) => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
    const result = run(['--version'])
    t.equal(result.status, 0)
    t.match(result.stdout, version)
  })

  t.test('config validate names the key path (the validator compiled at build time)', async (t) => {
    const path = join(work, 'bad.yaml')
    writeFileSync(path, stringify({ upstream: { url: 'http://127.0.0.1:1' }, keycloak: { issuer: 'https://sso.example.com/realms/a', server: 'http://kc', client_id: 'app', timeout_ms: 'soon' }, sever: {} }))
    const result = run(['config', 'validate', '-c', path])
    t.equal(result.status, 2)
    t.match(result.stderr, /keycloak\.timeout_ms: expected an integer, received string "soon"/)
    t.match(result.stderr, /sever: expected no such key \(did you mean server\?\)/)
  })

  t.test('serve: a bearer request through the proxy, a policy, the database migrated, gRPC loaded on demand', async (t) => {
    const standin = await startKeycloakStandin()
    t.teardown(() => standin.close())
    const upstream = await startEchoUpstream()
    t.teardown(() => upstream.close())
    const policies = join(work, 'policies')
    mkdirSync(policies)
    writeFileSync(join(policies, 'app.yaml'), stringify({ rules: [{ paths: ['/admin/**'], roles: ['admin'] }] }))
    const config = join(work, 'serve.yaml')
    writeFileSync(config, stringify({
      server: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      grpc: { enabled: true, host: '127.0.0.1', port: 0 },
      upstream: { url: upstream.url },
      keycloak: { issuer: standin.issuer, server: standin.baseUrl, client_id: standin.clientId, client_secret: standin.clientSecret },
      database: { path: join(work, 'gatehouse.db') },
      policies: { dir: policies },
      secrets: { encryption_keys: [randomBytes(32).toString('hex')], cookie_keys: [randomBytes(32).toString('hex')] }
    }))
    // As shipped: the flags of npm start, so the program runs from the code cache.
    const child = spawn(process.execPath, [...SHIPPED_FLAGS, BUNDLE, 'serve', '-c', config], { cwd: work, env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'inherit'] })
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
    t.teardown(() => { child.kill('SIGKILL') })
    const urls = await new Promise<Record<string, string>>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout })
      lines.on('line', (line) => {
        const entry = JSON.parse(line) as Record<string, string>
        if (entry.msg === 'gatehouse listening') resolve(entry)
      })
      child.once('exit', (code) => { reject(new Error(`serve exited with ${String(code)} before listening`)) })
    })
    child.stdout.resume()

    const alice = await standin.mintAccessToken({}, { username: 'alice' })
    // The JWKS arrives in the background after start-up; until then a token is a 503 or 401.
    let status = 0
    for (let i = 0; i < 200 && status !== 200; i++) {
      status = (await fetch(`${urls.proxy}/hello`, { headers: { authorization: `Bearer ${alice}` } })).status
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 25))
    }
    t.equal(status, 200, 'a valid token passes')
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-preferred-username'], 'alice', 'its identity reaches the app')
    t.equal((await fetch(`${urls.proxy}/admin/x`, { headers: { authorization: `Bearer ${alice}` } })).status, 200, 'an admin passes the admin rule')
    const bob = await standin.mintAccessToken({}, { username: 'bob' })
    t.equal((await fetch(`${urls.proxy}/admin/x`, { headers: { authorization: `Bearer ${bob}` } })).status, 403, 'the policy file was read and applied')

    const grpc = grpcClient(String(urls.grpc))
    t.teardown(() => { grpc.close() })
    const health = await grpc.health('envoy.service.auth.v3.Authorization')
    t.equal(health.response?.status, 'SERVING', 'the gRPC chunk and the protos beside dist/ were found')

    const metrics = await (await fetch(`${urls.admin}/metrics`)).text()
    t.match(metrics, /gatehouse_build_info\{/, 'the admin listener serves metrics')

    child.kill('SIGTERM')
    t.equal(await exited, 0, 'a clean stop')
    const migrated = spawnSync(process.execPath, [BUNDLE, 'status', '-c', config, '--json'], { cwd: work, encoding: 'utf8', env: { PATH: process.env.PATH } })
    t.not(migrated.stdout.trim(), '', 'status reads the database the bundle migrated')
  })
}
