import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'

type UpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void

/**
 * Lets only WebSocket upgrades reach the WebSocket proxy; any other `Upgrade` (`h2c` from
 * Java's HttpClient or `curl --http2`, say) is ignored and the request served as the HTTP/1.1
 * request it also is, as RFC 9110 §7.8 allows ("a server MAY ignore a received Upgrade header
 * field") and Envoy, h2o and uvicorn do. Call it after the WebSocket proxy has added its
 * listener.
 *
 * Node 20 hands every request carrying `Connection: upgrade` and `Upgrade` to the 'upgrade'
 * listeners once there is one (nodejs/node#57054; `shouldUpgradeCallback` arrives only in
 * Node 22.21/24.9), and the WebSocket server then refuses an `h2c` request with a 400. By
 * then Node has stopped parsing that connection at the end of the header section. So the
 * header section is written out again, without its `Upgrade` field (which makes it an
 * ordinary request to the parser), in front of the bytes that followed it, and the socket is
 * handed back to the HTTP server as a new connection, which parses the request, its body and
 * any later request on the connection as usual. The names and values are the ones Node's
 * parser accepted, as received (latin1 keeps every byte), and `name:value` without the
 * optional space keeps the section no longer than it was, so the same limits apply.
 */
export function ignoreNonWebSocketUpgrades (server: Server): void {
  const webSocket = server.listeners('upgrade') as UpgradeListener[]
  server.removeAllListeners('upgrade')
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (isWebSocketUpgrade(req.headers.upgrade)) {
      for (const listener of webSocket) listener.call(server, req, socket, head)
      return
    }
    let section = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}\r\n`
    const raw = req.rawHeaders
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i] as string
      if (name.toLowerCase() !== 'upgrade') section += `${name}:${raw[i + 1] as string}\r\n`
    }
    section += '\r\n'
    if (head.length > 0) socket.unshift(head)
    socket.unshift(Buffer.from(section, 'latin1'))
    server.emit('connection', socket)
  })
}

/** Whether an `Upgrade` value asks for WebSocket (RFC 6455 §4.2.1: case-insensitive). */
function isWebSocketUpgrade (value: string | undefined): boolean {
  if (value === undefined) return false
  return value.split(',').some((protocol) => protocol.trim().toLowerCase().split('/')[0] === 'websocket')
}
