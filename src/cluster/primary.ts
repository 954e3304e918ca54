import cluster, { type Worker } from 'node:cluster'
import type { Logger } from 'pino'
import { AggregatorRegistry } from 'prom-client'
import type { StopSignals } from '../cli/signals.ts'
import { isClusterMessage, WORKER_SLOT_ENV, type ClusterMessage } from './messages.ts'

/** Options of {@link runPrimary}. */
export interface PrimaryOptions {
  /** How many workers to keep running (`server.workers`, 2 or more). */
  workers: number
  log: Logger
  /** What stops the cluster (SIGTERM or SIGINT to the primary). */
  stopSignals: StopSignals
  /** What makes every worker reload (SIGHUP to the primary); none when absent. */
  reloadSignals?: (onReload: () => void) => () => void
  /** `server.shutdown_timeout_ms`: a worker gets this, and a margin, to stop before it is killed. */
  shutdownTimeoutMs: number
}

// A worker that dies is replaced after this, doubled for each death that follows quickly, up to
// the maximum: a crash loop costs a log line every half minute, not the CPU.
const RESTART_DELAY_MS = 250
const MAX_RESTART_DELAY_MS = 30_000
// A worker up this long has proved itself: its slot's delay starts again from the first.
const STABLE_AFTER_MS = 60_000
// Beyond the workers' own shutdown grace: the time to flush logs and close SQLite.
const STOP_MARGIN_MS = 5000

/**
 * `gatehouse serve` with `server.workers` > 1: this process binds nothing and decides nothing;
 * it forks the workers (the same program with the same arguments: Node's cluster shares every
 * listening socket among them), replaces one that dies, passes SIGHUP on, sums the workers'
 * metrics for whichever worker a scrape reached, and stops them all on SIGTERM. Resolves to the
 * exit code: 0 after a clean stop, a worker's own code when one could not start (a port in use,
 * a bad policy file), after the others were stopped.
 */
export async function runPrimary (options: PrimaryOptions): Promise<number> {
  const { log } = options
  const aggregator = new AggregatorRegistry()
  const live = new Map<number, Worker>()
  const delays = new Map<number, number>()
  const restarts = new Set<NodeJS.Timeout>()
  const listening = new Set<number>()
  let stopping = false
  let exitCode = 0
  let finish: (code: number) => void = () => {}
  const finished = new Promise<number>((resolve) => { finish = resolve })

  const stopAll = (): void => {
    if (stopping) return
    stopping = true
    for (const timer of restarts) clearTimeout(timer)
    restarts.clear()
    for (const worker of live.values()) {
      if (worker.isConnected()) worker.send({ type: 'gatehouse:stop' } satisfies ClusterMessage)
    }
    const kill = setTimeout(() => {
      for (const [slot, worker] of live) {
        log.error({ worker: slot, pid: worker.process.pid }, 'worker did not stop in time; killing it')
        worker.process.kill('SIGKILL')
      }
    }, options.shutdownTimeoutMs + STOP_MARGIN_MS)
    kill.unref()
    if (live.size === 0) finish(exitCode)
  }

  const fork = (slot: number): void => {
    const started = Date.now()
    const worker = cluster.fork({ [WORKER_SLOT_ENV]: String(slot) })
    live.set(slot, worker)
    let up = false
    worker.on('message', (message: unknown) => {
      if (!isClusterMessage(message)) return
      if (message.type === 'gatehouse:listening') {
        up = true
        const first = listening.size < options.workers && !listening.has(slot)
        listening.add(slot)
        if (first && listening.size === options.workers) log.info({ ...message.urls, workers: options.workers }, 'gatehouse cluster listening')
      } else if (message.type === 'gatehouse:metrics-request') {
        const { id } = message
        aggregator.clusterMetrics().then(
          (text) => { if (worker.isConnected()) worker.send({ type: 'gatehouse:metrics-answer', id, text } satisfies ClusterMessage) },
          (err: unknown) => { if (worker.isConnected()) worker.send({ type: 'gatehouse:metrics-answer', id, error: (err as Error).message } satisfies ClusterMessage) }
        )
      }
    })
    worker.on('exit', (code, signal) => {
      live.delete(slot)
      if (stopping) {
        if (code !== 0 && exitCode === 0) exitCode = 1
        if (live.size === 0) finish(exitCode)
        return
      }
      if (!up) {
        // It never listened: its own error is on standard error. Starting it again would fail
        // again, so the cluster stops with its code, as a single process would have.
        log.error({ worker: slot, code, signal }, 'worker failed to start; stopping the cluster')
        exitCode = code === 0 || code === null ? 1 : code
        stopAll()
        return
      }
      const delay = Date.now() - started > STABLE_AFTER_MS ? RESTART_DELAY_MS : (delays.get(slot) ?? RESTART_DELAY_MS)
      delays.set(slot, Math.min(delay * 2, MAX_RESTART_DELAY_MS))
      log.error({ worker: slot, pid: worker.process.pid, code, signal, restart_in_ms: delay }, 'worker exited; starting another in its place')
      const timer = setTimeout(() => {
        restarts.delete(timer)
        if (!stopping) fork(slot)
      }, delay)
      restarts.add(timer)
    })
  }

  const offStop = options.stopSignals((signal) => {
    log.warn({ signal, workers: live.size }, 'shutting down the cluster')
    stopAll()
  })
  const offReload = options.reloadSignals?.(() => {
    log.info({ workers: live.size }, 'SIGHUP: workers reload')
    for (const worker of live.values()) {
      if (worker.isConnected()) worker.send({ type: 'gatehouse:reload' } satisfies ClusterMessage)
    }
  })
  for (let slot = 1; slot <= options.workers; slot++) fork(slot)
  const code = await finished
  offStop()
  offReload?.()
  log.info({ code }, 'gatehouse cluster stopped')
  return code
}
