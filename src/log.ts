import { pino, type Logger, type DestinationStream, type LevelWithSilent } from 'pino'

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
}

/** The root logger: JSON lines, secrets censored, one `module` per child. */
export function createLogger (options: LoggerOptions = {}): Logger {
  return pino({
    level: options.level ?? 'info',
    base: { service: 'gatehouse' },
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime
  }, options.destination ?? pino.destination({ sync: false }))
}

export type { Logger }
