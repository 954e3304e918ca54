import { PathError } from '../errors.ts'

/** A request target after normalisation. */
export interface NormalisedTarget {
  /** The path policies match and the app receives: decoded unreserved characters, no dot segments, no repeated slashes. */
  path: string
  /** The query string as sent, with its leading `?`, or an empty string. */
  query: string
}

const HEX = /^[0-9A-Fa-f]{2}$/
// RFC 3986 §2.3: only these may be decoded without changing what a path means.
const UNRESERVED = /^[A-Za-z0-9\-._~]$/
// An encoded `%` that a second decoding would turn into another escape.
const DOUBLE_ENCODED = /%25[0-9A-Fa-f]{2}/

/**
 * Normalises a request target once, so every policy decision is made on one spelling of a
 * path (DESIGN §2 step 1): percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2),
 * other escapes upper-cased, repeated slashes collapsed, dot segments removed (§5.2.4).
 * A path that cannot be normalised safely is refused with {@link PathError}: an encoded `/`
 * or `\` (the app might decode it into a separator the policy never saw), an encoded NUL,
 * a raw `\` (some servers treat it as `/`), a `;` raw or encoded (path parameters, below),
 * a double-encoded escape (`%2561`), invalid escapes, control characters, a dot segment above the root, or a target that is
 * not origin-form. A `;` in the query string is left alone: it is the app's to read.
 */
export function normaliseTarget (target: string): NormalisedTarget {
  if (!target.startsWith('/')) throw new PathError('request target must be a path starting with /')
  const q = target.indexOf('?')
  const rawPath = q === -1 ? target : target.slice(0, q)
  const query = q === -1 ? '' : target.slice(q)
  return { path: normalisePath(rawPath), query }
}

// Anything that could need work or be refused: an escape, a backslash, a fragment, a `;`, a
// control character, a repeated slash, or a dot segment. Most request paths have none and
// are already normal: one test of this expression is all they cost.
const NEEDS_WORK = /[%\\#;\u0000-\u001f\u007f]|\/\/|\/\.\.?(?:\/|$)/

/** As {@link normaliseTarget}, for a path without a query. */
export function normalisePath (rawPath: string): string {
  if (!NEEDS_WORK.test(rawPath)) return rawPath
  const decoded = decodeUnreserved(rawPath)
  const segments: string[] = []
  // A path ending in `/`, `/.` or `/..` names a directory: keep its trailing slash (§5.2.4).
  let trailing = false
  for (const segment of decoded.split('/')) {
    if (segment === '' || segment === '.') {
      trailing = true
      continue
    }
    if (segment === '..') {
      if (segments.length === 0) throw new PathError('path climbs above the root')
      segments.pop()
      trailing = true
      continue
    }
    segments.push(segment)
    trailing = false
  }
  if (segments.length === 0) return '/'
  return '/' + segments.join('/') + (trailing ? '/' : '')
}

function decodeUnreserved (raw: string): string {
  let out = ''
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i] as string
    const code = ch.charCodeAt(0)
    if (code < 0x20 || code === 0x7f) throw new PathError('path contains a control character')
    if (ch === '\\') throw new PathError('path contains a backslash')
    if (ch === '#') throw new PathError('path contains a fragment')
    // RFC 3986 §3.3 lets a segment carry `;params`. Servlet containers (Tomcat, Jetty, Spring)
    // strip them before routing, so `/admin;x=1` and `/admin;/users` are served as `/admin`
    // and `/admin/users` while a policy would see other paths. Refused, never stripped: what an
    // app makes of a parameter is its own business, and no rule may be matched on a guess.
    if (ch === ';') throw new PathError('path contains a ; (path parameter)')
    if (ch !== '%') {
      out += ch
      continue
    }
    const hex = raw.slice(i + 1, i + 3)
    if (!HEX.test(hex)) throw new PathError('path contains an invalid percent-encoding')
    const byte = Number.parseInt(hex, 16)
    if (byte === 0x2f || byte === 0x5c) throw new PathError('path contains an encoded slash or backslash')
    if (byte === 0x00) throw new PathError('path contains an encoded NUL')
    // An encoded `;` is refused too. Tomcat and Spring split parameters off before decoding,
    // so for them `%3B` is a literal character; but an app or a proxy behind Gatehouse that
    // decodes first (or twice) would then strip a parameter the policy never saw. Spring
    // Security's StrictHttpFirewall refuses `;`, `%3b` and `%3B` by default for this reason,
    // and no legitimate route needs one.
    if (byte === 0x3b) throw new PathError('path contains an encoded ; (path parameter)')
    const decoded = String.fromCharCode(byte)
    out += UNRESERVED.test(decoded) ? decoded : `%${hex.toUpperCase()}`
    i += 2
  }
  // Double encoding (issue 13): `%25` followed by two hex digits is an escape once decoded
  // (`/%2561dmin` is `/%61dmin`, then `/admin`). Gatehouse decodes once, so a rule would see
  // one spelling and an app or proxy that decodes again another: refused, as Spring
  // Security's StrictHttpFirewall refuses an encoded percent. A `%25` that is not followed by
  // hex digits (`/50%25-off`) cannot become anything else and passes.
  if (out.includes('%25') && DOUBLE_ENCODED.test(out)) throw new PathError('path contains a double-encoded escape (%25 followed by hex digits)')
  return out
}

/** The form policies match: no trailing slash except on the root. */
export function matchForm (path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path
}
