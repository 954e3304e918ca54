import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { launchChromium } from '../fixtures/browser.ts'
import { requireProgram } from '../fixtures/system-programs.ts'

const DEMO = fileURLToPath(new URL('../../demo/run.ts', import.meta.url))
// Every port free: the demo falls back to any port when its usual one is taken.
const PORTS = { DEMO_UPSTREAM_PORT: '0', DEMO_KEYCLOAK_PORT: '0', GATEHOUSE_PORT: '0', GATEHOUSE_ADMIN_PORT: '0' }

/** `npm run demo` (tsx demo/run.ts), with its output collected. */
function startDemo (args: string[]): { child: ChildProcess, output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', DEMO, ...args], { env: { PATH: process.env.PATH, ...PORTS }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  return { child, output: () => out }
}

t.test('npm run demo starts everything from config.yaml and its walkthrough passes', async (t) => {
  const { child, output } = startDemo(['--check'])
  const [code] = await once(child, 'exit') as [number | null]
  const out = output()
  t.equal(code, 0, out)
  t.match(out, /Gatehouse \(proxy\) {3}http:\/\/127\.0\.0\.1:\d+/)
  t.match(out, /TOKEN=\$\(curl -s -d grant_type=password .*\/realms\/demo\/protocol\/openid-connect\/token/)
  t.match(out, 'ok   alice calls /hello: 200')
  t.match(out, 'ok   bob on /admin (needs role admin): 403')
  t.match(out, '"x-auth-request-preferred-username":"alice"')
  t.notMatch(out, 'FAIL')
})

t.test('the demo as npm run demo starts it: alice signs in through a real browser and sees her identity', async (t) => {
  if (requireProgram(t, 'chromium') === null) return
  const browser = await launchChromium(t)
  const { child, output } = startDemo([])
  t.teardown(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM')
      await once(child, 'exit')
    }
  })
  await new Promise<void>((resolve, reject) => {
    const check = (): void => { if (output().includes('Press Ctrl-C to stop.')) resolve() }
    child.stdout?.on('data', check)
    child.once('exit', (code) => reject(new Error(`the demo exited (${code}) before it was ready:\n${output()}`)))
    check()
  })
  const proxyUrl = /Gatehouse \(proxy\) +(http:\/\/127\.0\.0\.1:\d+)/.exec(output())?.[1] as string
  const page = await browser.newPage()
  await page.goto(`${proxyUrl}/hello`)
  t.notOk(page.url().startsWith(proxyUrl), 'sent to the identity provider to sign in')
  await page.fill('#username', 'alice')
  await page.fill('#password', 'alice-password')
  await Promise.all([page.waitForURL(`${proxyUrl}/hello`), page.click('#kc-login')])
  t.equal(await page.textContent('h1'), 'Demo app')
  const body = await page.textContent('body') ?? ''
  t.match(body, /x-auth-request-preferred-username\s*alice/)
  t.match(body, /x-auth-request-mode\s*keycloak/)
  t.match(body, /x-auth-request-roles\s*[^\n]*admin/)
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit') as [number | null]
  t.equal(code, 0, 'the demo stops cleanly on SIGTERM')
  t.notMatch(output(), /"level":50/, 'nothing was logged at error')
})
