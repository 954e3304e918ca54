import cluster from 'node:cluster'
import { AggregatorRegistry, Gauge, type Registry } from 'prom-client'
import type { StopSignals } from '../cli/signals.ts'
import { isClusterMessage, WORKER_SLOT_ENV, type ClusterMessage, type MetricsAnswer } from './messages.ts'

/** Which worker this process is, when it is one of `server.workers`. */
export interface WorkerRole {
  /** 1 to `server.workers`; a replaced worker takes the slot of the one it replaces. */
  slot: number
  /** Slot 1 does the work that must happen once per host: the sync queue's replay. */
  leader: boolean
}

/** How long a worker waits for the primary's summed metrics before answering 503. */
const METRICS_TIMEOUT_MS = 5000

/** This process's role, or null when it is not a cluster worker (a single-process serve). */
export function workerRole (env: NodeJS.ProcessEnv): WorkerRole | null {
  if (!cluster.isWorker) return null
  const slot = Number(env[WORKER_SLOT_ENV])
  if (!Number.isInteger(slot) || slot < 1) throw new Error(`cluster worker without a valid ${WORKER_SLOT_ENV} (${String(env[WORKER_SLOT_ENV])})`)
  return { slot, leader: slot === 1 }
}

function send (message: ClusterMessage): void {
  // The channel is gone when the primary died; the disconnect handler below stops us then.
  if (process.connected && process.send !== undefined) process.send(message)
}

/** Tells the primary that every listener is bound, and where. */
export function announceListening (urls: Record<string, string>): void {
  send({ type: 'gatehouse:listening', urls })
}

/**
 * What stops a worker: SIGTERM or SIGINT to the worker itself (systemd signals the whole
 * control group, a terminal's Ctrl-C the process group), the primary's stop message, or the
 * primary going away, so no worker outlives it. Once, as {@link processStopSignals}.
 */
export function workerStopSignals (processSignals: StopSignals): StopSignals {
  return (onStop) => {
    let stopped = false
    const once = (signal: NodeJS.Signals): void => {
      if (stopped) return
      stopped = true
      off()
      onStop(signal)
    }
    const offProcess = processSignals(once)
    const onMessage = (message: unknown): void => { if (isClusterMessage(message) && message.type === 'gatehouse:stop') once('SIGTERM') }
    const onDisconnect = (): void => once('SIGTERM')
    process.on('message', onMessage)
    process.on('disconnect', onDisconnect)
    const off = (): void => {
      offProcess()
      process.off('message', onMessage)
      process.off('disconnect', onDisconnect)
    }
    return off
  }
}

/** Calls `onReload` for each SIGHUP the primary passes on; returns the unsubscribe. */
export function onReloadMessage (onReload: () => void): () => void {
  const handler = (message: unknown): void => { if (isClusterMessage(message) && message.type === 'gatehouse:reload') onReload() }
  process.on('message', handler)
  return () => { process.off('message', handler) }
}

/**
 * Makes this worker's `registry` part of the cluster's metrics and returns what `/metrics`
 * serves instead of the registry alone: every worker's metrics, from the primary, summed
 * (counters, histograms, memory) or, for our gauges, the largest value (the states they
 * report are shared, like the sessions in SQLite, or a worst case, like a circuit: two
 * workers' "open" is not 4). A scrape reaches one worker at random; without this it would
 * see a different process each time.
 */
export function shareMetrics (registry: Registry): () => Promise<string> {
  for (const metric of registry.getMetricsAsArray()) {
    // prom-client's default process and Node metrics carry their own aggregation.
    if (metric instanceof Gauge && !/^gatehouse_(process|nodejs)_/.test((metric as unknown as { name: string }).name)) {
      (metric as unknown as { aggregator: string }).aggregator = 'max'
    }
  }
  AggregatorRegistry.setRegistries([registry])
  // Constructing one installs prom-client's answer to the primary's requests in this worker.
  void new AggregatorRegistry()
  let nextId = 0
  const waiting = new Map<number, { resolve: (text: string) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }>()
  process.on('message', (message: unknown) => {
    if (!isClusterMessage(message) || message.type !== 'gatehouse:metrics-answer') return
    const answer = message as MetricsAnswer
    const pending = waiting.get(answer.id)
    if (pending === undefined) return
    waiting.delete(answer.id)
    clearTimeout(pending.timer)
    if (answer.text !== undefined) pending.resolve(answer.text)
    else pending.reject(new Error(`cluster metrics: ${answer.error ?? 'no answer'}`))
  })
  return async () => await new Promise<string>((resolve, reject) => {
    const id = nextId++
    const timer = setTimeout(() => {
      waiting.delete(id)
      reject(new Error('cluster metrics: the primary did not answer in time'))
    }, METRICS_TIMEOUT_MS)
    waiting.set(id, { resolve, reject, timer })
    send({ type: 'gatehouse:metrics-request', id })
  })
}
