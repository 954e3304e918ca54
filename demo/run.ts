// `npm run demo`: a demo app, a Keycloak stand-in with two users, and Gatehouse in front of
// the app, all on localhost, configured by the repository's config.yaml. `--check` runs the
// walkthrough's requests itself, prints what happened, and exits (non-zero on any surprise).
// `--keycloak` uses a real Keycloak instead of the stand-in (scripts/keycloak.sh fetch brings
// it; the realm is test/keycloak/realm.json, with the same two users).
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { fileURLToPath } from 'node:url'
import { startKeycloakStandin, type KeycloakStandin } from '../test/fixtures/keycloak-standin.ts'
import { keycloakTierMissing, keycloakVersion, startRealKeycloak } from '../test/fixtures/keycloak-real.ts'
import { loadForServe } from '../src/cli/config-command.ts'
import { startServer } from '../src/server.ts'
import { createLoggers } from '../src/log.ts'
import { createDemoUpstream } from './upstream.ts'

const CONFIG = fileURLToPath(new URL('../config.yaml', import.meta.url))
const check = process.argv.includes('--check')
const realKeycloak = process.argv.includes('--keycloak')
const port = (name: string, fallback: number): number => Number(process.env[name] ?? fallback)

/** Listens on `preferred`, or on any free port when it is taken. */
async function listen (server: Server, preferred: number): Promise<number> {
  for (const candidate of preferred === 0 ? [0] : [preferred, 0]) {
    try {
      server.listen(candidate, '127.0.0.1')
      await once(server, 'listening')
      return (server.address() as AddressInfo).port
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
    }
  }
  throw new Error('no port available')
}

async function startStandin (preferred: number): Promise<KeycloakStandin> {
  const options = {
    realm: 'demo',
    users: [
      { username: 'alice', password: 'alice-password', email: 'alice@example.test', firstName: 'Alice', lastName: 'Admin', realmRoles: ['admin'], groups: ['/staff/admins'] },
      { username: 'bob', password: 'bob-password', email: 'bob@example.test', firstName: 'Bob', lastName: 'User', realmRoles: ['user'], groups: ['/staff'] }
    ],
    clients: [{ clientId: 'gatehouse', secret: 'gatehouse-secret', redirectUris: ['*'] }]
  }
  try {
    return await startKeycloakStandin({ ...options, port: preferred })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
    return await startKeycloakStandin({ ...options, port: 0 })
  }
}

/** What the demo needs of its identity provider: the stand-in, or a real Keycloak. */
interface DemoIdp {
  label: string
  issuer: string
  baseUrl: string
  tokenUrl: string
  passwordGrant: (username: string, password: string) => Promise<{ access_token?: unknown }>
  close: () => Promise<void>
}

async function startIdp (): Promise<DemoIdp> {
  if (!realKeycloak) {
    const s = await startStandin(port('DEMO_KEYCLOAK_PORT', 8180))
    return { label: 'Keycloak stand-in', issuer: s.issuer, baseUrl: s.baseUrl, tokenUrl: s.endpoints.token, passwordGrant: async (u, p) => await s.passwordGrant(u, p), close: async () => await s.close() }
  }
  const missing = keycloakTierMissing()
  if (missing !== null) {
    process.stderr.write(`npm run demo -- --keycloak: ${missing}\n`)
    process.exit(1)
  }
  process.stdout.write(`Starting Keycloak ${keycloakVersion()} (20-40 s)...\n`)
  // Keycloak's back-channel logout URL for the gatehouse client (realm.json's GATEHOUSE_URL placeholder).
  const kc = await startRealKeycloak({ env: { GATEHOUSE_URL: `http://127.0.0.1:${port('GATEHOUSE_PORT', 4180)}` } })
  return { label: `Keycloak ${keycloakVersion()}`, issuer: kc.issuer, baseUrl: kc.baseUrl, tokenUrl: `${kc.issuer}/protocol/openid-connect/token`, passwordGrant: async (u, p) => await kc.passwordGrant(u, p), close: async () => await kc.close() }
}

const upstream = createDemoUpstream()
const upstreamPort = await listen(upstream, port('DEMO_UPSTREAM_PORT', 8080))
const standin = await startIdp()
const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-demo-'))

const env = {
  ...process.env,
  KEYCLOAK_ISSUER: standin.issuer,
  KEYCLOAK_URL: standin.baseUrl,
  KEYCLOAK_CLIENT_ID: 'gatehouse',
  KEYCLOAK_CLIENT_SECRET: 'gatehouse-secret',
  UPSTREAM_URL: `http://127.0.0.1:${upstreamPort}`,
  GATEHOUSE_DB: join(dataDir, 'gatehouse.db'),
  GATEHOUSE_HOST: '127.0.0.1',
  // Per-run keys: a real deployment keeps its own in the environment or a secret store.
  GATEHOUSE_ENCRYPTION_KEY: process.env.GATEHOUSE_ENCRYPTION_KEY ?? randomBytes(32).toString('base64'),
  GATEHOUSE_COOKIE_KEY: process.env.GATEHOUSE_COOKIE_KEY ?? randomBytes(32).toString('base64'),
  GATEHOUSE_LOG_LEVEL: process.env.GATEHOUSE_LOG_LEVEL ?? 'warn'
}
const { config, policy } = loadForServe(CONFIG, env)
const loggers = createLoggers({ level: config.log.level })
const gatehouse = await startServer(config, { log: loggers.log, accessLog: loggers.access, policy })
await gatehouse.app.keycloak.jwks.refresh('manual')

const tokenUrl = standin.tokenUrl
const tokenCommand = (user: string): string =>
  `curl -s -d grant_type=password -d client_id=gatehouse -d client_secret=gatehouse-secret -d username=${user} -d password=${user}-password -d scope=openid ${tokenUrl} | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token'`

process.stdout.write(`
Gatehouse demo is running.

  Gatehouse (proxy)   ${gatehouse.proxyUrl}
  Gatehouse (admin)   ${gatehouse.adminUrl}/status   ${gatehouse.adminUrl}/metrics
  demo app            http://127.0.0.1:${upstreamPort}   (only reachable through Gatehouse in a real deployment)
  ${standin.label.padEnd(19)} ${standin.issuer}   users: alice / alice-password (admin), bob / bob-password

Get a token for alice and call the app through Gatehouse:

  TOKEN=$(${tokenCommand('alice')})
  curl -H "Authorization: Bearer $TOKEN" ${gatehouse.proxyUrl}/hello

Then try: no token (401), ${gatehouse.proxyUrl}/public/ (public), ${gatehouse.proxyUrl}/admin as bob (403).

In a browser, open ${gatehouse.proxyUrl}/hello: you are sent to ${realKeycloak ? "Keycloak's" : "the stand-in's"} login page (alice /
alice-password) and back to the app, which shows the identity headers Gatehouse sent it. Sign out at
${gatehouse.proxyUrl}/_gatehouse/logout. Stop ${realKeycloak ? 'Keycloak' : "the stand-in's port"} to see the local login form instead.
`)

async function walkthrough (): Promise<boolean> {
  const alice = (await standin.passwordGrant('alice', 'alice-password')).access_token
  const bob = (await standin.passwordGrant('bob', 'bob-password')).access_token
  const steps: Array<[string, string, Record<string, string>, number]> = [
    ['alice calls /hello', '/hello', { authorization: `Bearer ${alice}` }, 200],
    ['no token on /hello', '/hello', {}, 401],
    ['a public page without a token', '/public/index.html', {}, 200],
    ['bob on /admin (needs role admin)', '/admin', { authorization: `Bearer ${bob}` }, 403],
    ['alice on /admin', '/admin', { authorization: `Bearer ${alice}`, 'x-auth-request-user': 'spoofed' }, 200]
  ]
  let ok = true
  process.stdout.write('\nWalkthrough:\n')
  const page = await fetch(`${gatehouse.proxyUrl}/hello`, { headers: { accept: 'text/html' }, redirect: 'manual' })
  const toLogin = page.status === 302 && (page.headers.get('location') ?? '').startsWith('/_gatehouse/login?rd=')
  ok &&= toLogin
  process.stdout.write(`  ${toLogin ? 'ok  ' : 'FAIL'} a browser without a session is sent to sign in: ${page.status} ${page.headers.get('location') ?? ''}\n`)
  for (const [label, path, headers, expected] of steps) {
    const res = await fetch(`${gatehouse.proxyUrl}${path}`, { headers })
    const body = await res.text()
    const pass = res.status === expected
    ok &&= pass
    process.stdout.write(`  ${pass ? 'ok  ' : 'FAIL'} ${label}: ${res.status}\n`)
    if (res.status === 200 && headers.authorization !== undefined) {
      const seen = JSON.parse(body) as { identity: Record<string, string> }
      process.stdout.write(`       the app saw ${JSON.stringify(seen.identity)}\n`)
      if (seen.identity['x-auth-request-user'] === 'spoofed') ok = false
    }
  }
  return ok
}

const passed = await walkthrough()
const stop = async (code: number): Promise<never> => {
  await gatehouse.stop()
  await standin.close()
  upstream.closeAllConnections()
  upstream.close()
  rmSync(dataDir, { recursive: true, force: true })
  process.exit(code)
}
if (check) await stop(passed ? 0 : 1)
process.stdout.write('\nPress Ctrl-C to stop.\n')
process.once('SIGINT', () => { void stop(0) })
process.once('SIGTERM', () => { void stop(0) })
