import t from 'tap'
import { randomBytes } from 'node:crypto'
import { KeyRing, decodeKey, secretsEqual } from '../../../src/store/crypto.ts'
import { safeReturnPath } from '../../../src/session/return-to.ts'
import { DEFAULT_SCRYPT, hashPassword, needsRehash, passwordProblem, unmatchableHash, verifyPassword } from '../../../src/session/passwords.ts'
import { CookieJar } from '../../../src/session/cookie.ts'
import { csrfMatches } from '../../../src/session/csrf.ts'
import { localLoginAllowed } from '../../../src/session/local-allow.ts'
import { secretsIn } from '../../fixtures/gatehouse.ts'

t.test('key ring: the first key encrypts, every key decrypts, context is bound', async (t) => {
  const oldKey = randomBytes(32).toString('hex')
  const newKey = randomBytes(32).toString('base64')
  const before = new KeyRing([oldKey])
  const blob = before.encrypt('refresh-token-value', 'token_cache:s1:refresh')
  t.equal(blob.indexOf(Buffer.from('refresh-token-value')), -1, 'no plaintext in the blob')
  const rotated = new KeyRing([newKey, oldKey])
  t.equal(rotated.decryptText(blob, 'token_cache:s1:refresh'), 'refresh-token-value', 'old data reads after rotation')
  t.equal(new KeyRing([newKey]).decryptText(rotated.encrypt('x', 'c'), 'c'), 'x', 'new data is written with the new key')
  t.throws(() => rotated.decrypt(blob, 'token_cache:s2:refresh'), 'a blob moved to another row does not decrypt')
  t.throws(() => new KeyRing([newKey]).decrypt(blob, 'token_cache:s1:refresh'), /no longer in the ring/)
  const tampered = Buffer.from(blob)
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1
  t.throws(() => before.decrypt(tampered, 'token_cache:s1:refresh'), 'tampering is detected')
  t.equal(decodeKey('short'), null)
  t.equal(decodeKey(randomBytes(16).toString('hex')), null)
  t.ok(secretsEqual('abc', 'abc'))
  t.notOk(secretsEqual('abc', 'abd'))
  t.notOk(secretsEqual('abc', 'abcd'))
})

t.test('return paths: only same-origin relative paths pass', async (t) => {
  for (const bad of ['//evil.example', '/\\evil.example', 'https://evil.example', 'http:/evil.example', '%2F%2Fevil.example', '/%2F%2Fevil.example', '/%252F%252Fevil.example',
    '/%5Cevil.example', '/\t/evil.example', '/\n/evil.example', 'javascript:alert(1)', 'evil.example', '', '/%E0%A4%A']) {
    t.equal(safeReturnPath(bad), '/', JSON.stringify(bad))
  }
  t.equal(safeReturnPath(42), '/')
  t.equal(safeReturnPath('/a/b?c=d#e'), '/a/b?c=d#e')
  t.equal(safeReturnPath('/x', '/home'), '/x')
  t.equal(safeReturnPath('//x', '/home'), '/home')
  t.equal(safeReturnPath('/' + 'a'.repeat(5000)), '/', 'overlong paths are refused')
})

t.test('passwords: scrypt with parameters in the hash, policy', async (t) => {
  const hash = await hashPassword('correct horse battery', { N: 1024, r: 8, p: 1 })
  t.match(hash, /^scrypt\$1024\$8\$1\$/)
  t.ok(await verifyPassword('correct horse battery', hash))
  t.notOk(await verifyPassword('correct horse battery!', hash))
  t.notOk(await verifyPassword('x', 'not-a-hash'), 'a malformed hash is a mismatch')
  t.ok(needsRehash(hash), 'weaker than the default: rehash on next login')
  t.notOk(needsRehash(await hashPassword('another one here')))
  const policy = { min_length: 12, not_username: true, not_current: true }
  t.match(passwordProblem('short', 'ann', policy), 'at least 12')
  t.match(passwordProblem('my-name-is-ANN-ok', 'ann', policy), 'user name')
  t.equal(passwordProblem('a long enough password', 'ann', policy), null)
})

t.test('the unmatchable hash has the default parameters, differs each time and matches no password', async (t) => {
  const dummy = unmatchableHash()
  t.match(dummy, new RegExp(`^scrypt\\$${DEFAULT_SCRYPT.N}\\$${DEFAULT_SCRYPT.r}\\$${DEFAULT_SCRYPT.p}\\$[\\w-]{22}\\$[\\w-]{86}$`), 'checking against it costs what checking a real hash does')
  t.not(unmatchableHash(), dummy)
  t.notOk(needsRehash(dummy))
  const cheap = unmatchableHash({ N: 1024, r: 8, p: 1 })
  for (const password of ['', 'gatehouse-dummy-password', 'correct horse battery']) t.notOk(await verifyPassword(password, cheap))
})

t.test('cookies and CSRF: signatures verify under any ring key; tampering reads as absent', async (t) => {
  const jar = new CookieJar(['k'.repeat(32)], 'gatehouse_session')
  const signed = jar.sign('secret-value')
  t.equal(jar.sessionSecret(`gatehouse_session=${signed}`, false), 'secret-value')
  t.equal(jar.sessionSecret(`__Host-gatehouse_session=${signed}`, true), 'secret-value', 'Secure cookies: the __Host- spelling')
  t.equal(jar.sessionSecret(`gatehouse_session=${signed}`, true), null, 'Secure cookies: an unprefixed one is never read')
  t.equal(jar.sessionSecret(`__Host-gatehouse_session=${signed}`, false), null, 'plain cookies: only the plain name')
  t.equal(jar.sessionSecret(`gatehouse_session=${signed.replace('secret', 'secreT')}`, false), null)
  t.equal(jar.sessionSecret(undefined, false), null)
  const rotated = new CookieJar(['n'.repeat(32), 'k'.repeat(32)], 'gatehouse_session')
  t.equal(rotated.sessionSecret(`gatehouse_session=${signed}`, false), 'secret-value', 'an old key still verifies')
  t.ok(csrfMatches('tok', 'tok'))
  t.notOk(csrfMatches('tok', 'tok2'))
  t.notOk(csrfMatches(null, 'tok'))
  t.notOk(csrfMatches('tok', undefined))
  t.notOk(csrfMatches('tok', ''))
})

t.test('local_auth.allow', async (t) => {
  t.ok(localLoginAllowed('all', []))
  t.notOk(localLoginAllowed('none', ['admin']))
  t.ok(localLoginAllowed(['admin'], ['user', 'admin']))
  t.notOk(localLoginAllowed(['admin'], ['user']))
})

t.test('the log check of every Gatehouse test recognises each kind of credential', async (t) => {
  const jar = new CookieJar(['k'.repeat(32)], 'gatehouse_session')
  t.same(secretsIn('{"msg":"request","user":"alice","path":"/hello"}'), [])
  t.equal(secretsIn('{"token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}').length, 1)
  t.equal(secretsIn('{"body":"username=alice&password=alice-password"}').length, 1)
  t.equal(secretsIn(`{"cookie":"${jar.sign(randomBytes(32).toString('base64url'))}"}`).length, 1)
})
