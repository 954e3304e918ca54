import t from 'tap'
import { WebSocket } from 'ws'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { startWebSocketUpstream } from '../fixtures/upstream.ts'

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
