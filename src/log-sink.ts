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

/** Bytes a batch collects before it is written, whatever the interval: 128 KiB. */
const BATCH_BYTES = 128 * 1024

/**
 * Where pino's lines go: collected for at most {@link FLUSH_INTERVAL_MS} and written as one
 * chunk. pino's own asynchronous destination (sonic-boom) cost 4 to 5 µs a line and a write
 * per turn of the event loop a few more, as much as the whole decision; a batch costs a
 * fraction of a microsecond a line (npm run bench). Each line is encoded into the batch's
 * buffer as it arrives: joining the batch's strings and encoding them at the end cost three
 * times as much, most of it walking the pieces each line was concatenated from. The stream
 * keeps ordering and backpressure. When the reader falls so far behind that the backlog passes
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
  /** The batch being collected: bytes `0..#used` of `#batch`, ending at each of `#ends`. */
  #batch: Buffer | null = null
  #used = 0
  #ends: number[] = []
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
    this.#append(line)
    if (this.#ends.length >= MAX_BATCH_LINES) {
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

  // A UTF-16 code unit is at most three bytes of UTF-8: a line that might not fit in what is
  // left goes out with the batch before it, or (longer than a batch) in a buffer of its own.
  #append (line: string): void {
    const most = line.length * 3
    if (this.#batch !== null && this.#used + most > this.#batch.length) this.#writeBatch()
    if (this.#batch === null) {
      this.#batch = Buffer.allocUnsafe(Math.max(BATCH_BYTES, most))
      this.#used = 0
    }
    this.#used += this.#batch.write(line, this.#used, 'utf8')
    this.#ends.push(this.#used)
  }

  readonly #flushNow = (): void => {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (this.#dropped > 0 && this.#stream.writableLength === 0) {
      this.#append(`${JSON.stringify({ level: 40, time: Date.now(), service: 'gatehouse', module: 'log', dropped: this.#dropped, msg: 'log lines dropped: standard output was not read fast enough' })}\n`)
      this.#dropped = 0
    }
    this.#writeBatch()
  }

  // The batch is handed to the stream (which may hold it until a slow reader takes it) and a
  // new one is started for the next line.
  #writeBatch (): void {
    const batch = this.#batch
    const ends = this.#ends
    if (batch === null || ends.length === 0) return
    this.#batch = null
    this.#ends = []
    if (!this.#stream.writable) {
      this.#droppedTotal += ends.length
      return
    }
    if (this.#used <= this.#maxChunkBytes) {
      this.#writeChunk(batch.subarray(0, this.#used), ends.length)
      return
    }
    // Cut at line ends, each write within the limit unless one line alone is longer.
    let start = 0
    let lines = 0
    for (let i = 0; i < ends.length; i++) {
      const end = ends[i] as number
      if (lines > 0 && end - start > this.#maxChunkBytes) {
        const cut = ends[i - 1] as number
        this.#writeChunk(batch.subarray(start, cut), lines)
        start = cut
        lines = 0
      }
      lines++
    }
    this.#writeChunk(batch.subarray(start, this.#used), lines)
  }

  // One callback per chunk (at most one per interval or batch): a write that fails loses the
  // whole chunk.
  #writeChunk (chunk: Buffer, count: number): void {
    this.#stream.write(chunk, (err) => { if (err !== null && err !== undefined) this.#droppedTotal += count })
  }
}
