// The trivial upstream every bench target forwards to: 200 "ok" for any request.
// Plain JavaScript, like the bare proxy, so no loader sits in any measured process.
import { createServer } from 'node:http'

const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
  res.end('ok')
})
server.keepAliveTimeout = 65_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`)
})
