import { status as grpcStatus, type handleServerStreamingCall, type handleUnaryCall, type ServerWritableStream, type UntypedServiceImplementation } from '@grpc/grpc-js'

/** `grpc.health.v1.HealthCheckResponse.ServingStatus`, as proto-loader spells enums (`enums: String`). */
export type ServingStatus = 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN'

/** A `grpc.health.v1.HealthCheckRequest`. */
interface HealthCheckRequest { service?: string }

/** A `grpc.health.v1.HealthCheckResponse`. */
interface HealthCheckResponse { status: ServingStatus }

// The answers are the same few objects every time: nothing is allocated per probe.
const ANSWERS: Readonly<Record<ServingStatus, HealthCheckResponse>> = Object.freeze({
  SERVING: Object.freeze({ status: 'SERVING' }),
  NOT_SERVING: Object.freeze({ status: 'NOT_SERVING' }),
  SERVICE_UNKNOWN: Object.freeze({ status: 'SERVICE_UNKNOWN' })
})

/**
 * The gRPC health service (`grpc.health.v1.Health`, grpc/grpc doc/health-checking.md) of one
 * listener: the server as a whole (service `''`) and each service it names answer `SERVING`
 * until {@link GrpcHealth.shutDown}, then `NOT_SERVING`. `Check` answers NOT_FOUND for a
 * service it does not know; `Watch` sends the status now and at every change, and
 * SERVICE_UNKNOWN (without ending the call) for an unknown service, as the protocol says.
 */
export class GrpcHealth {
  readonly #statuses = new Map<string, ServingStatus>()
  readonly #watchers = new Map<ServerWritableStream<HealthCheckRequest, HealthCheckResponse>, string>()

  /** `services` are the fully qualified names served, e.g. `envoy.service.auth.v3.Authorization`. */
  constructor (services: readonly string[]) {
    for (const service of ['', ...services]) this.#statuses.set(service, 'SERVING')
  }

  /** The status of `service` now (`''`: the server as a whole); SERVICE_UNKNOWN for one not served. */
  statusOf (service: string): ServingStatus {
    return this.#statuses.get(service) ?? 'SERVICE_UNKNOWN'
  }

  /**
   * Shutdown has begun: every service is NOT_SERVING from now on. Each open `Watch` is sent
   * that and then ended, so that it does not hold the listener's graceful shutdown open.
   */
  shutDown (): void {
    for (const service of this.#statuses.keys()) this.#statuses.set(service, 'NOT_SERVING')
    for (const [call, service] of this.#watchers) {
      call.write(ANSWERS[this.statusOf(service)])
      call.end()
    }
    this.#watchers.clear()
  }

  /** The handlers, for `server.addService`. */
  readonly implementation: UntypedServiceImplementation = {
    Check: ((call, callback) => {
      const status = this.#statuses.get(call.request.service ?? '')
      if (status === undefined) callback({ code: grpcStatus.NOT_FOUND, details: 'unknown service' })
      else callback(null, ANSWERS[status])
    }) satisfies handleUnaryCall<HealthCheckRequest, HealthCheckResponse>,
    Watch: ((call) => {
      const service = call.request.service ?? ''
      call.write(ANSWERS[this.statusOf(service)])
      // After shutdown began, the status sent is final: end at once rather than hold the
      // graceful shutdown open.
      if (this.statusOf(service) === 'NOT_SERVING') {
        call.end()
        return
      }
      this.#watchers.set(call, service)
      call.on('cancelled', () => { this.#watchers.delete(call) })
    }) satisfies handleServerStreamingCall<HealthCheckRequest, HealthCheckResponse>
  }
}
