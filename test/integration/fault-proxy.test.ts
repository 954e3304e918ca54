import { once } from 'node:events'
import { Agent, createServer, get } from 'node:http'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import t from 'tap'
import { startFaultProxy } from '../fixtures/fault-proxy.ts'
import type { FaultProxy, FaultProxyOptions } from '../fixtures/fault-proxy.ts'

/** What the helpers need from a (sub)test: somewhere to register cleanup. */
type Test = Pick<typeof t, 'teardown'>

interface Upstream {
  url: string
  port: number
  /** Requests the upstream has answered. */
  hits: () => number
}

/** An HTTP server that answers every request with 200 and the path it got. */
async function startUpstream (t: Test): Promise<Upstream> {
  let hits = 0
  const server = createServer((req, res) => {
    hits += 1
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(`upstream saw ${req.method} ${req.url}`)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const { port } = server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, port, hits: () => hits }
}

async function startProxy (t: Test, options: FaultProxyOptions): Promise<FaultProxy> {
  const proxy = await startFaultProxy(options)
  t.teardown(() => proxy.close())
  return proxy
}

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
  socket: Socket
}

/** GET with node:http, so socket errors keep their codes (ECONNREFUSED, ECONNRESET). */
function httpGet (url: string, agent: Agent | false = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent }, (res) => {
      // Read now: a keep-alive socket is detached from the response once it ends.
      const socket = res.socket
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('error', reject)
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socket }))
    })
    req.on('error', reject)
  })
}

t.test('pass forwards requests and answers both ways', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url })

  const answer = await httpGet(`${proxy.url}/hello?x=1`)

  t.equal(answer.status, 200)
  t.equal(answer.body, 'upstream saw GET /hello?x=1')
  t.equal(upstream.hits(), 1)
  t.equal(proxy.mode, 'pass')
  t.equal(proxy.url, `http://127.0.0.1:${proxy.port}`)
  t.same(proxy.connectionCount(), {
    total: 1,
    byMode: { pass: 1, refuse: 0, blackhole: 0, delay: 0, http5xx: 0, reset: 0 }
  })
})

t.test('target may be given as host and port', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: { host: '127.0.0.1', port: upstream.port } })

  const answer = await httpGet(`${proxy.url}/x`)

  t.equal(answer.status, 200)
  t.equal(upstream.hits(), 1)
})

t.test('refuse makes connections fail with ECONNREFUSED, and pass listens again on the same URL', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url })
  const url = proxy.url

  await proxy.setMode('refuse')
  await t.rejects(httpGet(`${url}/x`), { code: 'ECONNREFUSED' })
  t.equal(proxy.connectionCount().total, 0, 'a refused connection is never accepted')

  await proxy.setMode('pass')
  const answer = await httpGet(`${url}/x`)

  t.equal(proxy.url, url)
  t.equal(answer.status, 200)
  t.equal(upstream.hits(), 1)
})

t.test('a proxy can start refusing', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url, mode: 'refuse' })

  await t.rejects(httpGet(`${proxy.url}/x`), { code: 'ECONNREFUSED' })
  await proxy.setMode('pass')

  t.equal((await httpGet(`${proxy.url}/x`)).status, 200)
})

t.test('blackhole accepts and never answers until the deadline aborts the request', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url })
  // The first fetch() in a process loads undici; do that before a deadline starts counting.
  await (await fetch(upstream.url)).text()
  await proxy.setMode('blackhole')

  await t.rejects(fetch(`${proxy.url}/x`, { signal: AbortSignal.timeout(200) }), { name: 'TimeoutError' })

  t.equal(proxy.connectionCount().byMode.blackhole, 1)
  t.equal(upstream.hits(), 1, 'only the warm-up reached the upstream')
})

t.test('leaving blackhole releases held sockets; the same URL then forwards', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url, mode: 'blackhole' })
  const pending = httpGet(`${proxy.url}/held`)
  await proxy.waitForConnections(1)
  t.equal(proxy.openConnections(), 1)

  const released = t.rejects(pending, { code: 'ECONNRESET', message: 'socket hang up' })
  await proxy.setMode('pass')

  await released
  t.equal(proxy.openConnections(), 0)
  t.equal((await httpGet(`${proxy.url}/x`)).status, 200)
})

t.test('delay still forwards, after holding the connection', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url })
  await proxy.setMode('delay', { delayMs: 20 })

  const answer = await httpGet(`${proxy.url}/slow`)

  t.equal(answer.status, 200)
  t.equal(answer.body, 'upstream saw GET /slow')
  t.equal(proxy.connectionCount().byMode.delay, 1)
})

t.test('http5xx answers every request itself with 503 and Connection: close', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url })
  await proxy.setMode('http5xx')

  const answer = await httpGet(`${proxy.url}/x`)

  t.equal(answer.status, 503)
  t.equal(answer.headers.connection, 'close')
  t.equal(answer.body, 'fault-proxy: injected 503 Service Unavailable\n')
  t.equal(upstream.hits(), 0)
})

t.test('http5xx answers with the status it was given', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url, mode: 'http5xx', status: 502, body: 'bad gateway' })

  const answer = await httpGet(`${proxy.url}/x`)

  t.equal(answer.status, 502)
  t.equal(answer.body, 'bad gateway')
})

t.test('reset resets the connection', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url })
  await proxy.setMode('reset')

  await t.rejects(httpGet(`${proxy.url}/x`), { code: 'ECONNRESET' })
  t.equal(proxy.connectionCount().byMode.reset, 1)
  t.equal(upstream.hits(), 0)
})

t.test('a keep-alive connection from pass is cut when the mode changes, so it cannot bypass the fault', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startProxy(t, { target: upstream.url })
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())

  const first = await httpGet(`${proxy.url}/one`, agent)
  const closed = once(first.socket, 'close')
  await proxy.setMode('http5xx')
  await closed
  const second = await httpGet(`${proxy.url}/two`, agent)

  t.equal(first.status, 200)
  t.equal(second.status, 503)
  t.equal(upstream.hits(), 1)
  t.same(proxy.connectionCount().byMode, { pass: 1, refuse: 0, blackhole: 0, delay: 0, http5xx: 1, reset: 0 })
})

t.test('close destroys open sockets', async (t) => {
  const upstream = await startUpstream(t)
  const proxy = await startFaultProxy({ target: upstream.url, mode: 'blackhole' })
  const pending = httpGet(`${proxy.url}/held`)
  await proxy.waitForConnections(1)

  await proxy.close()

  await t.rejects(pending, { code: 'ECONNRESET' })
  t.equal(proxy.openConnections(), 0)
  await t.rejects(proxy.setMode('pass'), { message: 'fault proxy is closed' })
})
