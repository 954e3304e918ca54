const BASE = 'http://gatehouse.invalid'
const MAX_LENGTH = 2048

/**
 * The same-origin relative path a return URL (`rd`, a logout redirect) may send a browser
 * to, or `fallback`. Only a single leading `/` is accepted: no scheme, no `//` or `/\`
 * (browsers read both as another host), no backslash or control character anywhere (browsers
 * drop tabs and newlines, turning `/\t/evil` into `//evil`), and none of these hidden behind
 * percent-encoding. What passes is re-serialised by the URL parser, and the serialised
 * result is checked again: resolving dot segments can itself make `//`, as in `/.//evil.com`
 * or `/..//evil.com`, which a browser reads as another host (a protocol-relative URL).
 */
export function safeReturnPath (value: unknown, fallback = '/'): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_LENGTH) return fallback
  let decoded = value
  for (let i = 0; i < 3; i++) {
    if (!acceptable(decoded)) return fallback
    let next: string
    try {
      next = decodeURIComponent(decoded)
    } catch {
      return fallback
    }
    if (next === decoded) break
    decoded = next
  }
  if (!acceptable(decoded)) return fallback
  const url = new URL(value, BASE)
  if (url.origin !== BASE) return fallback
  const serialised = url.pathname + url.search + url.hash
  return acceptable(serialised) ? serialised : fallback
}

function acceptable (path: string): boolean {
  // eslint-disable-next-line no-control-regex
  return path.startsWith('/') && !path.startsWith('//') && !/[\\\u0000-\u001f\u007f]/.test(path)
}
