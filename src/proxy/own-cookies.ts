import { cookieNames } from '../session/cookie.ts'

/**
 * A filter removing Gatehouse's own cookies (session, CSRF and login transaction, in both the
 * `__Host-` and the plain spelling) from a Cookie header before it is forwarded: the app, or
 * anything it logs, must not be able to replay a user's Gatehouse session.
 *
 * Every other cookie passes byte for byte, in order. The header is parsed only when one of
 * our names occurs in it at all (a substring check), and a header that holds none of them is
 * returned as the very same string; `''` means nothing is left, and the header is dropped.
 * The pairs are split on `;` as RFC 6265 §4.2.1 writes them (a cookie value cannot hold one),
 * and a name is compared exactly, as a browser sends it back and `CookieJar` reads it.
 */
export function ownCookieFilter (sessionCookieName: string): (cookie: string) => string {
  const names = new Set<string>()
  for (const secure of [true, false]) {
    const spelled = cookieNames(sessionCookieName, secure)
    names.add(spelled.session).add(spelled.csrf).add(spelled.login)
  }
  // The plain spellings are substrings of the prefixed ones: three checks cover all six.
  const needles = [...new Set(Object.values(cookieNames(sessionCookieName, false)))]
  return (cookie) => {
    let found = false
    for (const needle of needles) {
      if (cookie.includes(needle)) { found = true; break }
    }
    return found ? withoutCookies(cookie, names) : cookie
  }
}

/** `cookie` without the pairs named in `names`; the others as sent, joined as they were. */
function withoutCookies (cookie: string, names: ReadonlySet<string>): string {
  let kept = ''
  let removed = false
  let start = 0
  while (start <= cookie.length) {
    let end = cookie.indexOf(';', start)
    if (end === -1) end = cookie.length
    const pair = cookie.slice(start, end)
    const eq = pair.indexOf('=')
    const name = (eq === -1 ? pair : pair.slice(0, eq)).trim()
    if (names.has(name)) {
      removed = true
    } else if (pair.trim() !== '') {
      // The separator and spacing before a kept pair stay as sent, except before the first one.
      kept = kept === '' ? pair.trimStart() : `${kept};${pair}`
    }
    start = end + 1
  }
  return removed ? kept : cookie
}
