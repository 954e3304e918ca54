import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const DEMO = fileURLToPath(new URL('../../demo/run.ts', import.meta.url))

t.test('npm run demo starts everything from config.yaml and its walkthrough passes', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', DEMO, '--check'], {
    env: { PATH: process.env.PATH, DEMO_UPSTREAM_PORT: '0', DEMO_KEYCLOAK_PORT: '0', GATEHOUSE_PORT: '0', GATEHOUSE_ADMIN_PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  t.equal(code, 0, out)
  t.match(out, /Gatehouse \(proxy\) {3}http:\/\/127\.0\.0\.1:\d+/)
  t.match(out, /TOKEN=\$\(curl -s -d grant_type=password .*\/realms\/demo\/protocol\/openid-connect\/token/)
  t.match(out, 'ok   alice calls /hello: 200')
  t.match(out, 'ok   bob on /admin (needs role admin): 403')
  t.match(out, '"x-auth-request-preferred-username":"alice"')
  t.notMatch(out, 'FAIL')
})
