import { statSync, watch, type FSWatcher } from 'node:fs'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { PolicyError } from '../errors.ts'
import type { PolicySet } from './policy.ts'

/** How a reload ended: a new set in force, the set rejected (the running one stays), or nothing changed. */
export type ReloadResult = 'success' | 'failure' | 'unchanged'

/** What asked for a reload. */
export type ReloadTrigger = 'watch' | 'signal' | 'manual'

/** One reload, as listeners, logs and `/status` see it. */
export interface ReloadOutcome {
  result: ReloadResult
  trigger: ReloadTrigger
  /** When it happened, in milliseconds since the epoch. */
  at: number
  /** The version in force afterwards. */
  version: string
  /** For a failure: every problem, `file (line n): key: expected …, received …`, or the error's message. */
  problems: readonly string[]
}

/** The policies as `/status` reports them. */
export interface PolicyStatus {
  version: string
  loaded_at: string
  dir: string
  files: readonly string[]
  rules: number
  roles: number
  watching: boolean
  last_reload: { at: string, trigger: ReloadTrigger, result: ReloadResult, problems: readonly string[] } | null
}

/** What a {@link PolicyStore} needs. */
export interface PolicyStoreOptions {
  /** Reads and compiles the policy set afresh (throws {@link PolicyError} when it is invalid). */
  load: () => PolicySet
  clock: Clock
  log: Logger
  /** How long file events must settle before a watched reload, in milliseconds. */
  debounceMs: number
}

/**
 * The policy set in force, swappable while Gatehouse runs (issue 13 item 4). `decide()` reads
 * {@link current} once per request: one property read, so a reload costs requests nothing, and
 * a request decided while a reload happens is decided wholly by one set or the other. A set
 * that fails validation is rejected whole: the running one stays, and the failure is logged
 * with every problem's file and line and told to listeners (the reloads metric).
 *
 * Reloads come from a watch of `policies.dir` (debounced: an editor's save is a burst of
 * events, and many editors write a temporary file and rename it over the old one, which is a
 * rename in the directory, so the directory is watched rather than each file), from SIGHUP
 * (cli/run.ts) and from {@link reload}. A Kubernetes ConfigMap volume swaps a `..data` symlink
 * in the directory, which the watch sees too. When the directory itself is replaced, the
 * watch follows the new one at the next reload.
 */
export class PolicyStore {
  #current: PolicySet
  #loadedAt: number
  #last: ReloadOutcome | null = null
  readonly #options: PolicyStoreOptions
  readonly #listeners = new Set<(outcome: ReloadOutcome) => void>()
  #watcher: FSWatcher | null = null
  #watchedIno: number | null = null
  #timer: NodeJS.Timeout | null = null
  #wanted = false

  constructor (initial: PolicySet, options: PolicyStoreOptions) {
    this.#current = initial
    this.#options = options
    this.#loadedAt = options.clock.now()
  }

  /** The set in force. */
  get current (): PolicySet {
    return this.#current
  }

  /** When the set in force was loaded, in milliseconds since the epoch. */
  get loadedAt (): number {
    return this.#loadedAt
  }

  /** Calls `listener` after every reload; returns the unsubscribe. */
  onReload (listener: (outcome: ReloadOutcome) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /**
   * Reads the policies again and puts them in force when they are valid and differ from the
   * running set (by content hash). Never throws: a failure is the outcome's result.
   */
  reload (trigger: ReloadTrigger): ReloadOutcome {
    const { log, clock } = this.#options
    const previous = this.#current
    let outcome: ReloadOutcome
    try {
      const next = this.#options.load()
      if (next.version === previous.version) {
        outcome = { result: 'unchanged', trigger, at: clock.now(), version: previous.version, problems: [] }
        log.debug({ trigger, version: previous.version }, 'policies unchanged')
      } else {
        this.#current = next
        this.#loadedAt = clock.now()
        outcome = { result: 'success', trigger, at: this.#loadedAt, version: next.version, problems: [] }
        log.info({ trigger, version: next.version, previous: previous.version, files: next.files, rules: next.rules.length }, 'policies reloaded')
        for (const warning of next.warnings) log.warn({ dir: next.dir }, warning)
      }
    } catch (err) {
      const problems = err instanceof PolicyError && err.problems.length > 0
        ? err.problems.map((p) => `${p.path}: expected ${p.expected}, received ${p.received}`)
        : [(err as Error).message]
      outcome = { result: 'failure', trigger, at: clock.now(), version: previous.version, problems }
      log.error({ trigger, dir: previous.dir, version: previous.version, problems }, 'policy reload rejected; the running policies stay')
    }
    this.#last = outcome
    if (this.#wanted) this.#followDirectory()
    for (const listener of this.#listeners) listener(outcome)
    return outcome
  }

  /** Starts watching the directory of the set in force; changes reload after the debounce. */
  watch (): void {
    this.#wanted = true
    this.#followDirectory()
  }

  // (Re)starts the watch when there is none or the directory is no longer the one watched.
  #followDirectory (): void {
    const dir = this.#current.dir
    let ino: number | null
    try {
      ino = statSync(dir).ino
    } catch {
      ino = null
    }
    if (this.#watcher !== null && ino === this.#watchedIno) return
    this.#stopWatching()
    if (ino === null) return
    try {
      // Not persistent: a watch must never keep the process alive on its own.
      const watcher = watch(dir, { persistent: false }, () => { this.#schedule() })
      watcher.on('error', (err) => {
        this.#options.log.warn({ err, dir }, 'policy directory watch failed; SIGHUP still reloads')
        this.#stopWatching()
      })
      this.#watcher = watcher
      this.#watchedIno = ino
    } catch (err) {
      this.#options.log.warn({ err, dir }, 'cannot watch the policy directory; SIGHUP still reloads')
    }
  }

  #schedule (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.reload('watch')
    }, this.#options.debounceMs)
    this.#timer.unref()
  }

  #stopWatching (): void {
    this.#watcher?.close()
    this.#watcher = null
    this.#watchedIno = null
  }

  /** Stops watching; a pending watched reload is dropped. */
  close (): void {
    this.#wanted = false
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#stopWatching()
  }

  /** What `/status` reports. */
  status (): PolicyStatus {
    const set = this.#current
    const last = this.#last
    return {
      version: set.version,
      loaded_at: new Date(this.#loadedAt).toISOString(),
      dir: set.dir,
      files: set.files,
      rules: set.rules.length,
      roles: set.roles.defined.size,
      watching: this.#watcher !== null,
      last_reload: last === null ? null : { at: new Date(last.at).toISOString(), trigger: last.trigger, result: last.result, problems: last.problems }
    }
  }
}
