/**
 * The messages the cluster primary and its workers exchange over Node's IPC channel. Each has a
 * `type` of our own prefix, so prom-client's messages on the same channel pass untouched.
 */

/** A worker has bound every listener; `urls` are where (the same in every worker). */
export interface ListeningMessage { type: 'gatehouse:listening', urls: Record<string, string> }
/** The primary asks a worker to stop gracefully (as SIGTERM would). */
export interface StopMessage { type: 'gatehouse:stop' }
/** The primary passes on a SIGHUP: reload what can be reloaded. */
export interface ReloadMessage { type: 'gatehouse:reload' }
/** A worker asks the primary for every worker's metrics, summed; `id` pairs the answer. */
export interface MetricsRequest { type: 'gatehouse:metrics-request', id: number }
/** The primary's answer: the exposition text, or why there is none. */
export interface MetricsAnswer { type: 'gatehouse:metrics-answer', id: number, text?: string, error?: string }

/** Every message of ours. */
export type ClusterMessage = ListeningMessage | StopMessage | ReloadMessage | MetricsRequest | MetricsAnswer

/** The environment variable that gives a worker its slot, 1 to `server.workers`. */
export const WORKER_SLOT_ENV = 'GATEHOUSE_WORKER_SLOT'

/** Whether `value` is one of our messages (and which). */
export function isClusterMessage (value: unknown): value is ClusterMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' &&
    (value as { type: string }).type.startsWith('gatehouse:')
}
