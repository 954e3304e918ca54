import t from 'tap'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocket, WebSocketServer } from 'ws'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'

/** A WebSocket app that echoes messages and records each handshake's path and headers. */
async function startWebSocketUpstream (t: { teardown: (fn: () => unknown) => void }): Promise<{ url: string, handshakes: Array<{ url: string, headers: IncomingHttpHeaders }> }> {
  const handshakes: Array<{ url: string, headers: IncomingHttpHeaders }> = []
  const server = createServer((_req, res) => res.end('plain http'))
  const wss = new WebSocketServer({ server })
  wss.on('connection', (socket, req) => {
    handshakes.push({ url: req.url ?? '', headers: req.headers })
    socket.on('message', (data) => socket.send(`echo: ${String(data)}`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const client of wss.clients) client.terminate()
    wss.close()
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, handshakes }
}

/** Opens a WebSocket and resolves with it once open, or with the HTTP status that refused it. */
function connect (url: string, headers: Record<string, string> = {}): Promise<{ socket: WebSocket | null, status: number | null }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers })
    socket.once('open', () => resolve({ socket, status: null }))
    socket.once('unexpected-response', (_req, res) => { resolve({ socket: null, status: res.statusCode ?? 0 }); res.resume() })
    socket.once('error', reject)
  })
}

t.test('WebSocket upgrades go through the same decision and carry the identity', async (t) => {
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = await startWebSocketUpstream(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(standin, upstream.url), {
    'app.yaml': 'rules:\n  - paths: [/admin/**]\n    roles: [admin]\n'
  }))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const wsBase = gatehouse.proxyUrl.replace('http:', 'ws:')
  const alice = (await standin.passwordGrant('alice', 'alice-password')).access_token
  const bob = (await standin.passwordGrant('bob', 'bob-password')).access_token

  const anonymous = await connect(`${wsBase}/socket`)
  t.equal(anonymous.status, 401, 'no token: refused before any upgrade')
  const forbidden = await connect(`${wsBase}/admin/socket`, { authorization: `Bearer ${bob}` })
  t.equal(forbidden.status, 403, 'the role rule applies to upgrades too')
  t.equal(upstream.handshakes.length, 0, 'the app saw no handshake for refused upgrades')

  const { socket } = await connect(`${wsBase}/./admin//socket?room=1`, { authorization: `Bearer ${alice}`, 'x-auth-request-user': 'mallory', 'X_Auth_Request_Roles': 'root' })
  t.ok(socket)
  if (socket === null) return
  t.teardown(() => socket.terminate())
  const reply = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String(data))))
  socket.send('hello')
  t.equal(await reply, 'echo: hello')

  const handshake = upstream.handshakes[0]
  t.equal(handshake?.url, '/admin/socket?room=1', 'the app got the normalised path')
  t.equal(handshake?.headers['x-auth-request-user'], standin.user('alice').sub)
  t.equal(handshake?.headers['x-auth-request-preferred-username'], 'alice')
  t.equal(handshake?.headers['x-auth-request-mode'], 'token')
  t.notMatch(String(handshake?.headers['x-auth-request-roles']), 'root', 'spoofed roles were dropped')
  t.notOk(Object.keys(handshake?.headers ?? {}).some((h) => h.includes('_')), 'no underscore spelling reaches the app')
  t.equal(handshake?.headers['x-forwarded-for'], '127.0.0.1')
})
