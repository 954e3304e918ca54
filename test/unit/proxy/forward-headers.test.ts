import t from 'tap'
import { connectionOptions } from '../../../src/proxy/forward-headers.ts'
import { ownCookieFilter } from '../../../src/proxy/own-cookies.ts'
import { classifyForwardError } from '../../../src/proxy/upstream-error.ts'

t.test('connectionOptions: the usual values list nothing; others list their extra names, lower-case', async (t) => {
  for (const value of [undefined, 'keep-alive', 'Keep-Alive', 'close', 'Upgrade', 'upgrade', 'keep-alive, Upgrade', ' , close ,']) {
    t.equal(connectionOptions(value), null, String(value))
  }
  t.same(connectionOptions('keep-alive, X-Hop,  x-Other ,TE'), ['x-hop', 'x-other'])
  t.same(connectionOptions(['X-A', 'x-b']), ['x-a', 'x-b'])
})

t.test('ownCookieFilter removes both spellings of our three cookies and nothing else', async (t) => {
  const strip = ownCookieFilter('gatehouse_session')
  const untouched = 'theme=dark; lang=en'
  t.equal(strip(untouched), untouched, 'no name of ours: the same string')
  t.equal(strip('a=1; gatehouse_sessionx=2; xgatehouse_csrf=3'), 'a=1; gatehouse_sessionx=2; xgatehouse_csrf=3', 'names that merely contain ours stay, byte for byte')
  t.equal(strip('gatehouse_session=s'), '')
  t.equal(strip('gatehouse_session=s; gatehouse_csrf=c; gatehouse_login=l'), '')
  t.equal(strip('__Host-gatehouse_session=s;__Host-gatehouse_csrf=c; __Host-gatehouse_login=l'), '')
  t.equal(strip('gatehouse_session=s; a=1'), 'a=1', 'no leading space once the first pair is gone')
  t.equal(strip('a=1;  gatehouse_csrf=c ;b=2;   c = 3'), 'a=1;b=2;   c = 3', 'spacing of the kept pairs as sent')
  t.equal(strip('a=1; gatehouse_login=x; a=1'), 'a=1; a=1', 'duplicates of other cookies are kept')
  t.equal(strip('gatehouse_session=1; gatehouse_session=2; z'), 'z', 'every occurrence goes; a pair without = is kept')
  t.equal(strip(' gatehouse_session = s ;;'), '', 'spaces around the name; empty pairs dropped')
  const custom = ownCookieFilter('sid')
  t.equal(custom('sid=1; gatehouse_csrf=2; __Host-sid=3; other=4'), 'other=4', 'the configured session name, in both spellings')
  t.equal(custom('gatehouse_session=1'), 'gatehouse_session=1', 'the default name is not ours when another is configured')
})

t.test('classifyForwardError maps undici and reply-from errors onto the fixed kinds', async (t) => {
  const wrapped = (outer: string, cause?: string): unknown => ({ code: outer, ...(cause !== undefined ? { cause: { code: cause } } : {}) })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_INTERNAL_SERVER_ERROR', 'ECONNREFUSED')), { upstream: true, kind: 'refused', status: 502, code: 'ECONNREFUSED' })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_GATEWAY_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT')), { upstream: true, kind: 'timeout', status: 504, code: 'UND_ERR_HEADERS_TIMEOUT' })
  t.same(classifyForwardError(wrapped('UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT')), { upstream: true, kind: 'timeout', status: 504, code: 'UND_ERR_CONNECT_TIMEOUT' })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_INTERNAL_SERVER_ERROR', 'UND_ERR_BODY_TIMEOUT')), { upstream: true, kind: 'timeout', status: 504, code: 'UND_ERR_BODY_TIMEOUT' })
  t.same(classifyForwardError(wrapped('UND_ERR_SOCKET', 'UND_ERR_SOCKET')), { upstream: true, kind: 'reset', status: 502, code: 'UND_ERR_SOCKET' })
  t.same(classifyForwardError(wrapped('ECONNRESET', 'ECONNRESET')), { upstream: true, kind: 'reset', status: 502, code: 'ECONNRESET' })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_SERVICE_UNAVAILABLE', 'ENOTFOUND')), { upstream: true, kind: 'network', status: 502, code: 'ENOTFOUND' })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_INTERNAL_SERVER_ERROR', 'HPE_INVALID_CONSTANT')), { upstream: true, kind: 'bad_response', status: 502, code: 'HPE_INVALID_CONSTANT' })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_BAD_GATEWAY')), { upstream: true, kind: 'bad_response', status: 502, code: 'FST_REPLY_FROM_BAD_GATEWAY' })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_INTERNAL_SERVER_ERROR', 'SOMETHING_NEW')), { upstream: true, kind: 'other', status: 502, code: 'SOMETHING_NEW' })
  t.same(classifyForwardError(new Error('no code')), { upstream: true, kind: 'other', status: 502, code: undefined })
  t.same(classifyForwardError(null), { upstream: true, kind: 'other', status: 502, code: undefined })
  // What a hop-by-hop header used to cause: undici refusing the request itself.
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_INTERNAL_SERVER_ERROR', 'UND_ERR_INVALID_ARG')), { upstream: false, status: 500, code: 'UND_ERR_INVALID_ARG' })
  t.same(classifyForwardError(wrapped('FST_REPLY_FROM_INTERNAL_SERVER_ERROR', 'UND_ERR_NOT_SUPPORTED')), { upstream: false, status: 500, code: 'UND_ERR_NOT_SUPPORTED' })
})
