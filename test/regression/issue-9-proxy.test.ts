// Issue 9, items 11 (hop-by-hop headers), 12 (access-log injection) and 13 (Gatehouse's own
// cookies reaching the app), through a real sidecar on a socket and a real upstream.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { WebSocket } from 'ws'
import { startEchoUpstream, startWebSocketUpstream, type EchoUpstream, type ReceivedRequest } from '../fixtures/upstream.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { addLocalUser, formLogin } from '../fixtures/sessions.ts'

const POLICY = 'rules:\n  - name: public pages\n    paths: [/public/**]\n    allow: public\n'

/** Settings for a sidecar that never calls Keycloak: local users, local sessions. */
function localSettings (upstreamUrl: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    upstream: { url: upstreamUrl },
    auth: { primary: 'local' },
    keycloak: { issuer: 'http://127.0.0.1:9/realms/test', server: 'http://127.0.0.1:9', client_id: 'app' },
    feature_flags: { keycloak_enabled: false },
    ...extra
  }
}

const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), localSettings(upstream.url), { 'app.yaml': POLICY }))
const port = Number(new URL(gatehouse.proxyUrl).port)

/** Runs `fn` and returns the requests the upstream received meanwhile. */
async function received (target: EchoUpstream, fn: () => Promise<unknown>): Promise<ReceivedRequest[]> {
  const before = target.requests.length
  await fn()
  return target.requests.slice(before)
}

/** Warn-or-worse lines from the proxy listener (where "upstream unreachable" and reply-from's "response errored" go). */
function proxyWarnings (): Array<Record<string, unknown>> {
  return gatehouse.log.entries().filter((e) => (e.level as number) >= 40 && e.module === 'proxy')
}

/** One HTTP response read off a raw connection. */
interface RawAnswer { status: number, headers: Record<string, string>, body: string }

/** A client connection written byte by byte, for what Node's client will not send (or wait for). */
class RawConnection {
  readonly socket: Socket
  #buffer = Buffer.alloc(0)
  #waiting: (() => void) | null = null
  #closed = false

  constructor (socket: Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => { this.#buffer = Buffer.concat([this.#buffer, chunk]); this.#wake() })
    socket.on('close', () => { this.#closed = true; this.#wake() })
  }

  static async open (): Promise<RawConnection> {
    const socket = connect(port, '127.0.0.1')
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    return new RawConnection(socket)
  }

  send (text: string): void { this.socket.write(text) }

  /** The next response (an interim 1xx included), whole. */
  async next (): Promise<RawAnswer> {
    for (;;) {
      const end = this.#buffer.indexOf('\r\n\r\n')
      if (end !== -1) {
        const [statusLine, ...lines] = this.#buffer.subarray(0, end).toString('latin1').split('\r\n')
        const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
        const status = Number(statusLine?.split(' ')[1])
        const length = status < 200 ? 0 : Number(headers['content-length'] ?? Number.NaN)
        if (Number.isNaN(length)) throw new Error(`no content-length in ${statusLine ?? ''}`)
        if (this.#buffer.length >= end + 4 + length) {
          const body = this.#buffer.subarray(end + 4, end + 4 + length).toString('utf8')
          this.#buffer = this.#buffer.subarray(end + 4 + length)
          return { status, headers, body }
        }
      }
      if (this.#closed) throw new Error(`connection closed with ${this.#buffer.length} bytes unread`)
      await new Promise<void>((resolve) => { this.#waiting = resolve })
    }
  }

  /** Resolves once the server has closed the connection. */
  async closed (): Promise<void> {
    while (!this.#closed) await new Promise<void>((resolve) => { this.#waiting = resolve })
  }

  #wake (): void { const w = this.#waiting; this.#waiting = null; w?.() }
}

t.test('11: Expect: 100-continue gets the 100 only once the request is allowed, and the body reaches the app', async (t) => {
  const connection = await RawConnection.open()
  t.teardown(() => connection.socket.destroy())
  const seen = await received(upstream, async () => {
    connection.send('POST /public/upload HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n')
    const interim = await connection.next()
    t.equal(interim.status, 100, 'the client is told to send its body')
    connection.send('hello world')
    const final = await connection.next()
    t.equal(final.status, 200)
  })
  t.equal(seen.length, 1)
  t.equal(seen[0]?.body, 'hello world')
  t.equal(seen[0]?.headers.expect, undefined, 'Expect is answered by Gatehouse, not forwarded')
})

t.test('11: a refused request with Expect: 100-continue is answered at once, without a 100 and without the app', async (t) => {
  const connection = await RawConnection.open()
  t.teardown(() => connection.socket.destroy())
  const seen = await received(upstream, async () => {
    connection.send('POST /private/upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n')
    const first = await connection.next()
    t.equal(first.status, 401, 'the first answer is the final one: no body was asked for')
    // The client may still send the body it announced: Node closes rather than read it as a request.
    if (first.status === 401) await connection.closed()
  })
  t.equal(seen.length, 0, 'the app received nothing')
})

t.test('11: Gatehouse\'s own form posts get the 100 before their body is read', async (t) => {
  const connection = await RawConnection.open()
  t.teardown(() => connection.socket.destroy())
  const body = 'username=carol&password=x'
  connection.send(`POST /_gatehouse/login HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`)
  t.equal((await connection.next()).status, 100)
  connection.send(body)
  const final = await connection.next()
  t.ok(final.status >= 400 && final.status < 500, `a form without its CSRF token is refused (${final.status})`)
})

t.test('11: an expectation other than 100-continue is a 417 and never reaches the app', async (t) => {
  const seen = await received(upstream, async () => {
    const res = await rawRequest(gatehouse.proxyUrl, '/public/x', { method: 'POST', headers: { expect: 'something-else', 'content-type': 'text/plain' }, body: 'x' })
    t.equal(res.status, 417)
    t.same(JSON.parse(res.body), { error: 'expectation_failed' })
  })
  t.equal(seen.length, 0)
})

t.test('11: Keep-Alive, Upgrade: h2c, TE, Trailer, Proxy-Connection and Connection-listed headers are removed, never a 502', async (t) => {
  const cases: Array<[string, Record<string, string>, string[]]> = [
    ['Keep-Alive: timeout=abc', { 'keep-alive': 'timeout=abc' }, ['keep-alive']],
    ['Upgrade: h2c without Connection: upgrade', { upgrade: 'h2c' }, ['upgrade']],
    ['TE and Trailer', { te: 'trailers', trailer: 'x-checksum' }, ['te', 'trailer']],
    ['Proxy-Connection', { 'proxy-connection': 'keep-alive' }, ['proxy-connection']],
    ['names listed in Connection', { connection: 'keep-alive, X-Hop, x-other', 'x-hop': '1', 'x-other': '2', 'x-end-to-end': '3' }, ['x-hop', 'x-other', 'connection']]
  ]
  for (const [label, headers, gone] of cases) {
    const seen = await received(upstream, async () => {
      const res = await rawRequest(gatehouse.proxyUrl, '/public/hop', { method: 'POST', headers: { ...headers, 'content-type': 'text/plain' }, body: 'payload' })
      t.equal(res.status, 200, label)
    })
    t.equal(seen.length, 1, label)
    for (const name of gone) t.equal(seen[0]?.headers[name], name === 'connection' ? 'keep-alive' : undefined, `${label}: ${name} is not forwarded`)
    t.equal(seen[0]?.body, 'payload', `${label}: the body arrives`)
  }
  t.equal(upstream.requests.at(-1)?.headers['x-end-to-end'], '3', 'a header not named in Connection passes')
})

t.test('11: a client cannot remove the headers Gatehouse sets by naming them in Connection', async (t) => {
  const seen = await received(upstream, async () => {
    const res = await rawRequest(gatehouse.proxyUrl, '/public/x', { headers: { connection: 'x-forwarded-for, X-Request-Id, x-auth-request-user', 'x-request-id': 'req-42' } })
    t.equal(res.status, 200)
  })
  t.equal(seen[0]?.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(typeof seen[0]?.headers['x-request-id'], 'string')
})

t.test('11: an h2c upgrade request is served as HTTP/1.1, its body included, and the connection stays usable', async (t) => {
  const connection = await RawConnection.open()
  t.teardown(() => connection.socket.destroy())
  const seen = await received(upstream, async () => {
    // As Java's HttpClient and `curl --http2` send it (RFC 7540 §3.2).
    connection.send('POST /public/h2c HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nfirst one')
    const first = await connection.next()
    t.equal(first.status, 200, 'answered, not upgraded and not refused')
    connection.send('GET /public/h2c-again HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n')
    t.equal((await connection.next()).status, 200, 'a second upgrade request on the same connection')
    connection.send('GET /public/plain HTTP/1.1\r\nHost: app.test\r\n\r\n')
    t.equal((await connection.next()).status, 200, 'then a plain one')
  })
  t.same(seen.map((r) => [r.method, r.url, r.body]), [['POST', '/public/h2c', 'first one'], ['GET', '/public/h2c-again', ''], ['GET', '/public/plain', '']])
  for (const request of seen) {
    t.equal(request.headers.upgrade, undefined)
    t.equal(request.headers['http2-settings'], undefined)
    t.equal(request.headers.host, 'app.test')
  }
})

t.test('11: none of these produced a 502, an upstream error or a warning', async (t) => {
  t.same(proxyWarnings(), [], 'no warn or error line (no "upstream unreachable")')
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.notMatch(metrics, /gatehouse_requests_total\{[^}]*code="5xx"\}/)
  t.notMatch(metrics, /gatehouse_upstream_errors_total\{kind="[a-z_]+"\} [1-9]/)
})

t.test('12: with trust_proxy, X-Forwarded-For cannot break or extend the access line', async (t) => {
  const trusted = await startGatehouse(t, writeConfig(t.testdir(), localSettings(upstream.url, { server: { trust_proxy: true } }), { 'app.yaml': POLICY }))
  // [X-Forwarded-For as sent, the client address Fastify reads from it: the leftmost entry]
  const forged: Array<[string, string]> = [['x","user":"root', 'x"'], ['a\\"b', 'a\\"b'], ['caf\u00e9\t"}{"', 'caf\u00e9\t"}{"']]
  for (const [value] of forged) {
    const res = await rawRequest(trusted.proxyUrl, '/public/logged', { headers: { 'x-forwarded-for': value } })
    t.equal(res.status, 200)
  }
  const lines = trusted.log.text().split('\n').filter((l) => l !== '')
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  const access = parsed.filter((e) => e.msg === 'request')
  t.equal(access.length, forged.length)
  t.same(access.map((e) => e.ip), forged.map(([, ip]) => ip), 'the address is logged as read, as one string')
  for (const entry of access) {
    t.equal(entry.user, null, 'no field was added')
    t.same(Object.keys(entry), ['level', 'time', 'service', 'module', 'reqId', 'method', 'path', 'status', 'decision', 'reason', 'rule', 'missing', 'auth_mode', 'user', 'ip', 'latency_ms', 'msg'])
  }
  t.notMatch(lines.join('\n'), '"user":"root"')
})

t.test('13: Gatehouse\'s session, CSRF and login cookies never reach the app; the app\'s own pass byte for byte', async (t) => {
  await addLocalUser(gatehouse.db, 'carol', 'carol-local-password', ['editor'])
  const browser = new BrowserClient()
  const signedIn = await formLogin(browser, gatehouse.proxyUrl, 'carol', 'carol-local-password', '/hello')
  t.equal(signedIn.status, 200)
  t.equal(upstream.requests.at(-1)?.headers.cookie, undefined, 'the browser sent only our cookies: no Cookie header at all')
  const session = browser.cookie(gatehouse.proxyUrl, 'gatehouse_session')?.value
  const csrf = browser.cookie(gatehouse.proxyUrl, 'gatehouse_csrf')?.value
  t.ok(session)
  t.ok(csrf)

  const header = `theme=dark; gatehouse_session=${session}; a=b=c; gatehouse_csrf=${csrf};  spaced = x; gatehouse_login=tx`
  const prefixed = '__Host-gatehouse_session=s;app=1;__Host-gatehouse_csrf=c; __Host-gatehouse_login=l; last=2'
  const seen = await received(upstream, async () => {
    const res = await rawRequest(gatehouse.proxyUrl, '/reports', { headers: { cookie: header } })
    t.equal(res.status, 200)
    t.equal((await rawRequest(gatehouse.proxyUrl, '/public/x', { headers: { cookie: prefixed } })).status, 200)
    t.equal((await rawRequest(gatehouse.proxyUrl, '/public/x', { headers: { cookie: 'a=1;b=2;  gatehouse_sessionx=3' } })).status, 200)
  })
  t.equal(seen[0]?.headers['x-auth-request-user'], 'carol', 'the session still decided the request')
  t.equal(seen[0]?.headers.cookie, 'theme=dark; a=b=c;  spaced = x', 'the other cookies as sent, in order')
  t.equal(seen[1]?.headers.cookie, 'app=1; last=2', 'the __Host- spellings are removed too')
  t.equal(seen[2]?.headers.cookie, 'a=1;b=2;  gatehouse_sessionx=3', 'a header with none of ours is untouched')
  t.notMatch(JSON.stringify(upstream.requests), String(session), 'the session secret never reached the app')
})

t.test('13: the WebSocket handshake to the app carries no Gatehouse cookie either', async (t) => {
  const app = await startWebSocketUpstream(t)
  const wsGatehouse = await startGatehouse(t, writeConfig(t.testdir(), localSettings(app.url), { 'app.yaml': POLICY }))
  /** Opens a socket through Gatehouse and waits for the app's echo, so the app-side handshake has happened. */
  const open = async (cookie: string): Promise<void> => {
    const socket = new WebSocket(`${wsGatehouse.proxyUrl.replace('http:', 'ws:')}/public/socket`, { headers: { cookie } })
    t.teardown(() => socket.terminate())
    await new Promise<void>((resolve, reject) => socket.once('open', resolve).once('error', reject))
    const echo = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String(data))))
    socket.send('ping')
    t.equal(await echo, 'echo: ping')
  }
  await open('app=1; gatehouse_session=abc.def; gatehouse_csrf=x; other=2')
  t.equal(app.handshakes.length, 1)
  t.equal(app.handshakes[0]?.headers.cookie, 'app=1; other=2')
  await open('gatehouse_session=abc.def')
  t.equal(app.handshakes.length, 2)
  t.equal(app.handshakes[1]?.headers.cookie, undefined, 'nothing left: no Cookie header')
})
