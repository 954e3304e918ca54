import type { FastifyInstance } from 'fastify'

/** Where one listener binds. */
export interface Bind {
  host: string
  port: number
}

/**
 * One way into Gatehouse with a socket of its own: the proxy listener (the proxy itself and
 * every HTTP entry point under the prefix), the admin listener, the gRPC ext_authz listener.
 * The app owns a list of them; `server.ts` starts and stops whatever is on the list.
 */
export interface Listener {
  /** Short name, for logs and {@link RunningServer.urls}: `proxy`, `admin`, `grpc`. */
  readonly name: string
  /** Binds to its configured address; resolves with where it listens (`http://host:port`). */
  listen: () => Promise<string>
  /** Stops accepting; resolves once the requests in flight have finished. */
  close: () => Promise<void>
  /** Ends every connection still open (the shutdown grace period is over). */
  closeConnections: () => void
}

/** A Fastify instance as a {@link Listener}. */
export function fastifyListener (name: string, instance: FastifyInstance, bind: Bind): Listener {
  return {
    name,
    listen: async () => {
      await instance.listen({ host: bind.host, port: bind.port })
      return listenUrl(instance.server.address())
    },
    close: async () => { await instance.close() },
    closeConnections: () => { instance.server.closeAllConnections() }
  }
}

/** `http://host:port` of a bound server address (IPv6 hosts in brackets). */
export function listenUrl (address: ReturnType<FastifyInstance['server']['address']>, scheme = 'http'): string {
  if (address === null || typeof address === 'string') return String(address)
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return `${scheme}://${host}:${address.port}`
}

/**
 * A listener whose code is loaded only when it is started: the gRPC listener pulls in grpc-js
 * and protobufjs (about 130 modules), which a sidecar without gRPC should not pay for at
 * start-up. A load failure rejects `listen`, like a bind failure.
 */
export function lazyListener (name: string, load: () => Promise<Listener>): Listener {
  let loaded: Listener | null = null
  return {
    name,
    listen: async () => {
      loaded = await load()
      return await loaded.listen()
    },
    close: async () => { await loaded?.close() },
    closeConnections: () => { loaded?.closeConnections() }
  }
}
