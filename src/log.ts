import { pino, symbols, type Logger, type DestinationStream, type LevelWithSilent } from 'pino'
import { BatchedSink, DEFAULT_MAX_BACKLOG_BYTES } from './log-sink.ts'
import { createAccessLog, type AccessLog } from './access-log.ts'

/**
 * Paths pino censors before a line is written (HOUSE-STYLE §5). Request and reply
 * serialisers never include bodies, so these cover headers and the objects modules log.
 */
export const REDACT_PATHS: readonly string[] = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  'password',
  '*.password',
  'new_password',
  '*.new_password',
  'token',
  '*.token',
  'access_token',
  '*.access_token',
  'refresh_token',
  '*.refresh_token',
  'id_token',
  '*.id_token',
  'logout_token',
  '*.logout_token',
  'client_secret',
  '*.client_secret',
  'secret',
  '*.secret'
]

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** Minimum level. Default is `info`. */
  level?: LevelWithSilent
  /** Where lines go. Default is standard output. */
  destination?: DestinationStream
  /** Fields every line carries besides `service` (a cluster worker's `worker`). */
  fields?: Record<string, unknown>
  /**
   * Largest single write to standard output, cut at line ends: `PIPE_BUF_BYTES` (log-sink.ts) when
   * other processes share it. Default is unbounded.
   */
  maxWriteBytes?: number
}

/** The two loggers of a process, writing to one destination. */
export interface Loggers {
  /** Everything but access lines: secrets censored by {@link REDACT_PATHS}. */
  log: Logger
  /** Access lines, on the same destination; null when the level is above `info`. */
  access: AccessLog | null
}

/** The root loggers: JSON lines on one destination, one `module` per child. */
export function createLoggers (options: LoggerOptions = {}): Loggers {
  const destination = options.destination ?? new BatchedSink(process.stdout, DEFAULT_MAX_BACKLOG_BYTES, options.maxWriteBytes)
  // `time` is epoch milliseconds (pino's default): formatting an ISO date cost a microsecond a line.
  const common = { level: options.level ?? 'info', base: { service: 'gatehouse', ...options.fields } }
  const log = pino({ ...common, redact: { paths: [...REDACT_PATHS], censor: '[redacted]' } }, destination)
  return { log, access: log.isLevelEnabled('info') ? createAccessLog(destination) : null }
}

/**
 * How many lines the batched sink under `log` (or under its root) has dropped so far, read
 * at call time; always 0 for any other destination, which drops nothing of ours. Through
 * pino's public stream symbol, so whoever built the logger need not pass the sink along.
 */
export function droppedLogLines (log: Logger): () => number {
  const destination = (log as unknown as Record<symbol, unknown>)[symbols.streamSym]
  return destination instanceof BatchedSink ? () => destination.droppedTotal : () => 0
}

/** The censored root logger alone (CLI commands that write no access lines). */
export function createLogger (options: LoggerOptions = {}): Logger {
  return createLoggers(options).log
}

export type { Logger }
