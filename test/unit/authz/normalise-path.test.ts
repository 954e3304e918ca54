import t from 'tap'
import { normalisePath, normaliseTarget, matchForm } from '../../../src/authz/normalise-path.ts'

t.test('spellings of one path normalise to one form', async (t) => {
  for (const raw of ['/admin', '//admin', '/./admin', '/public/../admin', '/%61dmin', '/%61%64%6D%69%6E', '/admin/', '///admin//', '/admin/.', '/admin/x/..']) {
    t.equal(matchForm(normalisePath(raw)), '/admin', raw)
  }
})

t.test('a trailing slash is kept for the app but ignored for matching', async (t) => {
  t.equal(normalisePath('/admin/'), '/admin/')
  t.equal(normalisePath('/a/b/..'), '/a/')
  t.equal(normalisePath('/a/b/.'), '/a/b/')
  t.equal(normalisePath('/'), '/')
  t.equal(normalisePath('//'), '/')
  t.equal(matchForm('/'), '/')
})

t.test('escapes that are not unreserved stay encoded, upper-cased', async (t) => {
  t.equal(normalisePath('/a%20b'), '/a%20B'.replace('B', 'b'))
  t.equal(normalisePath('/a%3fb'), '/a%3Fb')
  t.equal(normalisePath('/50%25-off'), '/50%25-off', 'an encoded % not followed by hex digits stays %25')
  t.equal(normalisePath('/%2e%2E/x'.replace('/%2e%2E', '/a/%2e%2E')), '/x', 'encoded dot segments are dot segments')
  t.equal(normalisePath('/caf%C3%A9'), '/caf%C3%A9')
})

t.test('paths that cannot be normalised safely are refused', async (t) => {
  const cases: Record<string, string> = {
    '/admin%2fsecret': 'path contains an encoded slash or backslash',
    '/admin%2Fsecret': 'path contains an encoded slash or backslash',
    '/admin%5csecret': 'path contains an encoded slash or backslash',
    '/admin\\secret': 'path contains a backslash',
    '/a%zz': 'path contains an invalid percent-encoding',
    '/a%4': 'path contains an invalid percent-encoding',
    '/a%00b': 'path contains an encoded NUL',
    '/..': 'path climbs above the root',
    '/a/../../b': 'path climbs above the root',
    '/%2e%2e/b': 'path climbs above the root',
    '/a\u0001b': 'path contains a control character',
    '/admin;x=1': 'path contains a ; (path parameter)',
    '/admin;/users': 'path contains a ; (path parameter)',
    '/a/b;': 'path contains a ; (path parameter)',
    '/;': 'path contains a ; (path parameter)',
    '/admin%3Bx=1': 'path contains an encoded ; (path parameter)',
    '/admin%3b/users': 'path contains an encoded ; (path parameter)',
    '/%2561dmin': 'path contains a double-encoded escape (%25 followed by hex digits)',
    '/%25%32%66': 'path contains a double-encoded escape (%25 followed by hex digits)',
    '/public/%252e%252e/admin': 'path contains a double-encoded escape (%25 followed by hex digits)',
    '/admin%252fusers': 'path contains a double-encoded escape (%25 followed by hex digits)'
  }
  for (const [raw, message] of Object.entries(cases)) {
    t.throws(() => normalisePath(raw), { code: 'ERR_PATH_INVALID', statusCode: 400, message }, raw)
  }
})

t.test('the query string is kept as sent, and only origin-form targets are accepted', async (t) => {
  t.same(normaliseTarget('//a/./b?x=%2F&y=..'), { path: '/a/b', query: '?x=%2F&y=..' })
  t.same(normaliseTarget('/a'), { path: '/a', query: '' })
  t.throws(() => normaliseTarget('http://evil.example/a'), { code: 'ERR_PATH_INVALID' })
  t.throws(() => normaliseTarget('*'), { code: 'ERR_PATH_INVALID' })
})

t.test('a ; in the query string is the app\'s business and passes unchanged', async (t) => {
  t.same(normaliseTarget('/search?q=a;b&x=%3B'), { path: '/search', query: '?q=a;b&x=%3B' })
  t.throws(() => normaliseTarget('/admin;x=1?q=a;b'), { code: 'ERR_PATH_INVALID', message: 'path contains a ; (path parameter)' })
})
