import type { Writable } from 'node:stream'

/** Largest backlog kept while the reader of standard output is slow: 64 MiB. */
export const DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024
/** Longest a line waits before it is written, in milliseconds. */
export const FLUSH_INTERVAL_MS = 20
/** A batch this long is written at once, whatever the interval. */
const MAX_BATCH_LINES = 512
/**
 * Linux's PIPE_BUF: a write to a pipe up to this size is never interleaved with another
 * process's write to the same pipe (pipe(7)), which is what keeps lines whole when several
 * workers share one standard output.
 */
export const PIPE_BUF_BYTES = 4096

/**
 * Where pino's lines go: collected for at most {@link FLUSH_INTERVAL_MS} and written as one
 * chunk. pino's own asynchronous destination (sonic-boom) cost 4 to 5 µs a line and a write
 * per turn of the event loop a few more, as much as the whole decision; a batch costs a
 * fraction of a microsecond a line (npm run bench). The stream keeps ordering and
 * backpressure. When the reader falls so far behind that the backlog passes
 * `maxBacklogBytes`, lines are dropped and counted rather than blocking requests or growing
 * without bound, and the count is reported once the backlog has drained.
 *
 * Where lines can be lost, each is counted in {@link droppedTotal}
 * (`gatehouse_log_lines_dropped_total`): over the backlog limit; after the stream has failed
 * or been closed (a reader that went away: EPIPE); and lines already handed to the stream
 * when its write fails. On Linux standard output to a pipe (a container's log) is
 * asynchronous, so a slow reader grows `writableLength` and the limit applies; to a file or a
 * terminal Node writes synchronously, so a slow disk or terminal slows the process instead
 * and nothing is dropped (Node's "A note on process I/O").
 */
export class BatchedSink {
  readonly #stream: Writable
  readonly #maxBacklogBytes: number
  readonly #maxChunkBytes: number
  #lines: string[] = []
  #timer: NodeJS.Timeout | null = null
  #dropped = 0
  #droppedTotal = 0

  /**
   * `maxChunkBytes` bounds each write, cut at line ends ({@link PIPE_BUF_BYTES} where other
   * processes write to the same stream); unbounded by default.
   */
  constructor (stream: Writable, maxBacklogBytes = DEFAULT_MAX_BACKLOG_BYTES, maxChunkBytes = Infinity) {
    this.#stream = stream
    this.#maxBacklogBytes = maxBacklogBytes
    this.#maxChunkBytes = maxChunkBytes
  }

  /** Queues one line (pino calls this with a complete JSON line). */
  write (line: string): void {
    if (this.#stream.writableLength > this.#maxBacklogBytes || !this.#stream.writable) {
      this.#dropped++
      this.#droppedTotal++
      return
    }
    this.#lines.push(line)
    if (this.#lines.length >= MAX_BATCH_LINES) {
      this.#flushNow()
    } else if (this.#timer === null) {
      this.#timer = setTimeout(this.#flushNow, FLUSH_INTERVAL_MS)
      // A pending batch must not keep a finished process alive; shutdown flushes explicitly.
      this.#timer.unref()
    }
  }

  /** Writes what is queued now; calls back once the stream has taken it (pino's `flush(cb)`). */
  flush (callback: (err?: Error) => void = () => {}): void {
    this.#flushNow()
    if (this.#stream.writableLength === 0) callback()
    else this.#stream.write('', () => callback())
  }

  /** Lines dropped since the last report because the reader was too slow. */
  get dropped (): number {
    return this.#dropped
  }

  /** Lines lost since this sink was made, for whatever reason; never decreases. */
  get droppedTotal (): number {
    return this.#droppedTotal
  }

  readonly #flushNow = (): void => {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (this.#dropped > 0 && this.#stream.writableLength === 0) {
      this.#lines.push(`${JSON.stringify({ level: 40, time: Date.now(), service: 'gatehouse', module: 'log', dropped: this.#dropped, msg: 'log lines dropped: standard output was not read fast enough' })}\n`)
      this.#dropped = 0
    }
    if (this.#lines.length === 0) return
    const lines = this.#lines
    this.#lines = []
    if (!this.#stream.writable) {
      this.#droppedTotal += lines.length
      return
    }
    if (this.#maxChunkBytes === Infinity) {
      this.#writeChunk(lines.length === 1 ? lines[0] as string : lines.join(''), lines.length)
      return
    }
    // Sizes in bytes, not characters: a value may hold non-ASCII text.
    let start = 0
    let bytes = 0
    for (let i = 0; i < lines.length; i++) {
      const size = Buffer.byteLength(lines[i] as string)
      if (i > start && bytes + size > this.#maxChunkBytes) {
        this.#writeChunk(lines.slice(start, i).join(''), i - start)
        start = i
        bytes = 0
      }
      bytes += size
    }
    this.#writeChunk(lines.slice(start).join(''), lines.length - start)
  }

  // One callback per chunk (at most one per interval or 512 lines): a write that fails loses
  // the whole chunk.
  #writeChunk (chunk: string, count: number): void {
    this.#stream.write(chunk, (err) => { if (err !== null && err !== undefined) this.#droppedTotal += count })
  }
}
