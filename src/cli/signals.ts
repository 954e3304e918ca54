/**
 * Subscribes `onStop` to whatever ends a long-running command (`serve`, `sync start`) and
 * returns the unsubscribe. Injectable so a test can stop a command it runs in its own process
 * without sending a signal to the test runner.
 */
export type StopSignals = (onStop: (signal: NodeJS.Signals) => void) => () => void

/**
 * SIGTERM (what Kubernetes and Docker send) or SIGINT (Ctrl-C), once: both handlers are removed
 * at the first signal, so a second one gets Node's default action and ends a stuck shutdown.
 */
export const processStopSignals: StopSignals = (onStop) => {
  const handler = (signal: NodeJS.Signals): void => {
    off()
    onStop(signal)
  }
  const off = (): void => {
    process.off('SIGTERM', handler)
    process.off('SIGINT', handler)
  }
  process.on('SIGTERM', handler)
  process.on('SIGINT', handler)
  return off
}

/**
 * Subscribes `onReload` to what asks `serve` to reload its policies and returns the
 * unsubscribe. Injectable, as {@link StopSignals} is, so a test reloads without a signal.
 */
export type ReloadSignals = (onReload: () => void) => () => void

/**
 * SIGHUP, the daemon convention for "read your configuration again" (nginx, HAProxy, sshd).
 * While subscribed, SIGHUP no longer ends the process (Node's default action for it).
 */
export const processReloadSignals: ReloadSignals = (onReload) => {
  const handler = (): void => { onReload() }
  process.on('SIGHUP', handler)
  return () => { process.off('SIGHUP', handler) }
}
