// The code cache the launcher compiles the program with (scripts/launcher.cjs): the program
// is started as shipped, against a provider and an upstream of this script's own, asked what a
// sidecar is asked in its first seconds (a bearer token, a browser without a session, a forged
// token, the probes and /metrics), and then writes the bytecode of everything it compiled.
// What no warm-up request reached (gRPC, the Admin API client, the CLI's other commands) is
// compiled from source when first used, as before.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { SignJWT, exportJWK, generateKeyPair } from 'jose'

/**
 * The Node flags Gatehouse is shipped to run under: those of `npm start` (the Dockerfile and the
 * systemd units use the same, test/integration/bundle.test.ts checks). V8 takes a cache only
 * under the flags it was made with; CODE_CACHE_NODE_FLAGS builds it for others.
 */
export function shippedNodeFlags () {
  const { scripts } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  const words = scripts.start.split(' ')
  return words.slice(1, words.indexOf('dist/bundle/gatehouse.js'))
}

const CHILD = fileURLToPath(new URL('./code-cache-child.cjs', import.meta.url))
const CODE_CACHE = fileURLToPath(new URL('../dist/bundle/program.cache', import.meta.url))
const CLIENT_ID = 'warm-up'

/** A server on 127.0.0.1 answering `handler`, and its origin. */
async function serve (handler) {
  const server = createServer(handler)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, origin: `http://127.0.0.1:${server.address().port}` }
}

/** A provider publishing discovery and one signing key, as Keycloak does under a realm. */
async function startProvider () {
  const { publicKey, privateKey } = await generateKeyPair('RS256')
  const jwks = { keys: [{ ...await exportJWK(publicKey), kid: 'warm-up', alg: 'RS256', use: 'sig' }] }
  let issuer = ''
  const { server, origin } = await serve((req, res) => {
    const endpoint = (name) => `${issuer}/protocol/openid-connect/${name}`
    const documents = {
      '/realms/warm-up/.well-known/openid-configuration': {
        issuer,
        authorization_endpoint: endpoint('auth'),
        token_endpoint: endpoint('token'),
        userinfo_endpoint: endpoint('userinfo'),
        end_session_endpoint: endpoint('logout'),
        jwks_uri: endpoint('certs'),
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256']
      },
      '/realms/warm-up/protocol/openid-connect/certs': jwks
    }
    const body = documents[req.url]
    res.writeHead(body === undefined ? 404 : 200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body ?? { error: 'not_found' }))
  })
  issuer = `${origin}/realms/warm-up`
  const token = (subject) => new SignJWT({ typ: 'Bearer', azp: CLIENT_ID, preferred_username: subject, realm_access: { roles: ['user'] } })
    .setProtectedHeader({ alg: 'RS256', kid: 'warm-up' })
    .setIssuer(issuer)
    .setAudience(CLIENT_ID)
    .setSubject(subject)
    .setIssuedAt()
    .setExpirationTime('10m')
    .sign(privateKey)
  return { server, origin, issuer, token }
}

/**
 * The program's "gatehouse listening" line (the URL of each listener). Its output is read to
 * the end, so that a full pipe never stops it.
 */
async function listening (child) {
  const lines = createInterface({ input: child.stdout })
  return await new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      let entry
      try {
        entry = JSON.parse(line)
      } catch {
        return // not a log line
      }
      if (entry.msg === 'gatehouse listening') resolve(entry)
    })
    lines.once('close', () => { reject(new Error('the warm-up run exited before it listened')) })
  })
}

/** Writes dist/bundle/program.cache; the program must be built. Throws when the run fails. */
export async function writeCodeCache (nodeFlags = process.env.CODE_CACHE_NODE_FLAGS?.split(' ').filter((flag) => flag !== '') ?? shippedNodeFlags()) {
  const work = await mkdtemp(join(tmpdir(), 'gatehouse-code-cache-'))
  const provider = await startProvider()
  const upstream = await serve((req, res) => { res.end('ok') })
  let child
  try {
    const config = join(work, 'config.yaml')
    const policies = join(work, 'policies')
    await mkdir(policies)
    // JSON is YAML. The image's build stage has no policies/ of the repository's.
    await writeFile(join(policies, 'app.yaml'), JSON.stringify({ rules: [{ name: 'admin area', paths: ['/admin/**'], roles: ['admin'] }, { name: 'health checks', paths: ['/healthz'], allow: 'public' }] }))
    await writeFile(config, JSON.stringify({
      server: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      upstream: { url: upstream.origin },
      keycloak: { issuer: provider.issuer, server: provider.origin, client_id: CLIENT_ID },
      database: { path: join(work, 'gatehouse.db') },
      policies: { dir: policies },
      secrets: { encryption_keys: [randomBytes(32).toString('hex')], cookie_keys: [randomBytes(32).toString('hex')] }
    }))
    child = spawn(process.execPath, [...nodeFlags, CHILD, 'serve', '-c', config], { cwd: work, env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
    const urls = await listening(child)
    const ask = async (url, headers, expected) => {
      const response = await fetch(url, { headers, redirect: 'manual' })
      await response.arrayBuffer()
      if (response.status !== expected) throw new Error(`warm-up: ${url} answered ${response.status}, not ${expected}`)
    }
    const tokens = await Promise.all(['alice', 'bob', 'carol'].map(provider.token))
    // The JWKS is fetched in the background after start-up; until it is in, a token is refused.
    for (let i = 0; ; i++) {
      const response = await fetch(`${urls.proxy}/app/page`, { headers: { authorization: `Bearer ${tokens[0]}` } })
      await response.arrayBuffer()
      if (response.status === 200) break
      if (i === 200) throw new Error(`warm-up: a valid token is still answered ${response.status} after 5 s`)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    // Each twice at least: a first call and a cached one take different paths.
    for (let round = 0; round < 4; round++) {
      for (const token of tokens) await ask(`${urls.proxy}/app/page?round=${round}`, { authorization: `Bearer ${token}` }, 200)
      await ask(`${urls.proxy}/app/page`, { accept: 'text/html' }, 302)
      await ask(`${urls.proxy}/app/page`, { authorization: `Bearer ${tokens[0].slice(0, -4)}AAAA` }, 401)
      await ask(`${urls.proxy}/admin/users`, { authorization: `Bearer ${tokens[1]}` }, 403)
      await ask(`${urls.proxy}/healthz`, {}, 200)
      for (const path of ['/healthz', '/readyz', '/metrics']) await ask(`${urls.admin}${path}`, {}, 200)
    }
    child.send('write')
    const [reply] = await once(child, 'message')
    if (reply !== 'written') throw new Error(`the warm-up run answered ${JSON.stringify(reply)}`)
    child.kill('SIGTERM')
    const [code] = child.exitCode !== null ? [child.exitCode] : await once(child, 'exit')
    if (code !== 0) throw new Error(`the warm-up run exited with ${String(code)}`)
    process.stdout.write(`code cache: ${((await stat(CODE_CACHE)).size / 1e6).toFixed(1)} MB for node ${nodeFlags.join(' ')}\n`)
  } finally {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    provider.server.close()
    upstream.server.close()
    await rm(work, { recursive: true, force: true })
  }
}
