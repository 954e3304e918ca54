import type { DestinationStream, Logger } from 'pino'
import type { Decision, DecisionReason } from './decision/decide.ts'
import type { AuthMode } from './identity.ts'

/** One request, as its access line records it. No field ever holds a secret or a query string. */
export interface AccessEntry {
  reqId: string
  method: string
  /** The normalised path when there is one, without the query (it may hold codes or tokens). */
  path: string
  status: number
  decision: Decision['kind'] | 'none'
  reason: DecisionReason | null
  rule: string | null
  /** For a caller a rule's conditions refused: what was missing (`any of roles admin`). Null or absent otherwise. */
  missing?: string | null
  authMode: AuthMode | 'none'
  user: string | null
  /** The client address as `server.trust_proxy` lets Fastify read it: behind a trusted proxy, whatever X-Forwarded-For said. */
  ip: string
  latencyMs: number
}

// The fields written without a check come from fixed lists of literals; this fails to compile
// if one of them is ever widened to `string` or holds a character JSON must escape.
type NeedsEscape<T extends string> = string extends T ? T : T extends `${string}${'"' | '\\' | '\n' | '\r' | '\t'}${string}` ? T : never
const LITERALS_ARE_PLAIN: [NeedsEscape<AccessEntry['decision'] | DecisionReason | AccessEntry['authMode']>] extends [never] ? true : never = true
void LITERALS_ARE_PLAIN

/** Where access lines go. */
export interface AccessLog {
  write: (entry: AccessEntry) => void
}

/**
 * Access lines written straight to the log destination in pino's own line format (`level`
 * 30, `time` in ms, `service`, `module`, `msg`). The schema is fixed and every value is known
 * not to be secret, so a line is assembled directly: through pino's generic serialiser and
 * redaction one line cost 3 µs to 17 µs, several times the decision it records (npm run bench).
 */
export function createAccessLog (destination: DestinationStream): AccessLog {
  // Methods, rule names, users and addresses repeat from line to line: each is escaped once
  // and looked up after (a bounded cache, so a flood of distinct values cannot grow it).
  const repeated = new EscapeCache(4096)
  let now = -1
  let time = ''
  return {
    write: (e) => {
      const ms = Date.now()
      if (ms !== now) { now = ms; time = String(ms) }
      // Every string a client or an operator can spell (the request id, method, path, rule,
      // user, what was missing and address: with `trust_proxy`, Fastify takes the address from
      // X-Forwarded-For as sent) goes through jsonString, directly or through the cache.
      // Decisions, reasons and modes are literals checked at compile time (LITERALS_ARE_PLAIN);
      // numbers are finite or null.
      destination.write(`{"level":30,"time":${time},"service":"gatehouse","module":"access","reqId":${jsonString(e.reqId)},` +
        `"method":${repeated.get(e.method)},"path":${jsonString(e.path)},"status":${jsonNumber(e.status)},"decision":"${e.decision}",` +
        `"reason":${e.reason === null ? 'null' : `"${e.reason}"`},"rule":${e.rule === null ? 'null' : repeated.get(e.rule)},` +
        `"missing":${e.missing == null ? 'null' : repeated.get(e.missing)},"auth_mode":"${e.authMode}",` +
        `"user":${e.user === null ? 'null' : repeated.get(e.user)},"ip":${repeated.get(e.ip)},"latency_ms":${hundredths(e.latencyMs)},"msg":"request"}\n`)
    }
  }
}

/** {@link jsonString} of values seen before, for at most `max` distinct values (then cleared). */
class EscapeCache {
  readonly #max: number
  #escaped = new Map<string, string>()

  constructor (max: number) {
    this.#max = max
  }

  get (value: string): string {
    let escaped = this.#escaped.get(value)
    if (escaped === undefined) {
      escaped = jsonString(value)
      if (this.#escaped.size >= this.#max) this.#escaped = new Map()
      this.#escaped.set(value, escaped)
    }
    return escaped
  }
}

/**
 * `value` as a JSON string. Printable ASCII other than `"` and `\` needs no escaping
 * (RFC 8259 §7), which one pass over the characters confirms for almost every value; anything
 * else goes through JSON.stringify, which also escapes lone surrogates. The check costs about
 * half of JSON.stringify on typical fields (a request id, an address, a path).
 */
export function jsonString (value: string): string {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return JSON.stringify(value)
  }
  return `"${value}"`
}

/**
 * A non-negative number to two decimals, as JSON (`1.23`, `0.05`, `2`), from its integer parts:
 * what `String()` gives for the rounded value, without formatting a double, which was most of
 * a line's own cost. Not a number (or negative, which a latency never is): as {@link jsonNumber}.
 */
function hundredths (value: number): string {
  if (!(value >= 0) || !Number.isFinite(value)) return jsonNumber(value)
  const total = Math.round(value * 100)
  const whole = Math.floor(total / 100)
  const fraction = total - whole * 100
  if (fraction === 0) return String(whole)
  return fraction % 10 === 0 ? `${whole}.${fraction / 10}` : `${whole}.${fraction < 10 ? '0' : ''}${fraction}`
}

/** A number as JSON: `NaN` and the infinities are not JSON numbers (RFC 8259 §6), so they are null. */
function jsonNumber (value: number): string {
  return Number.isFinite(value) ? String(value) : 'null'
}

/** Access lines through an ordinary logger (for embedders that pass only a logger). */
export function accessLogVia (log: Logger): AccessLog {
  const child = log.child({ module: 'access' })
  return {
    write: (e) => child.info({
      reqId: e.reqId, method: e.method, path: e.path, status: e.status, decision: e.decision, reason: e.reason, rule: e.rule, missing: e.missing ?? null,
      auth_mode: e.authMode, user: e.user, ip: e.ip, latency_ms: e.latencyMs
    }, 'request')
  }
}
