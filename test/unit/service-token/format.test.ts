import t from 'tap'
import { newIdentifier, newToken, parseToken, SERVICE_TOKEN_LENGTH, tokenDigest } from '../../../src/service-token/format.ts'

t.test('every token is ght_ + 12 + 43 + 6 base62 characters with a valid checksum', async (t) => {
  for (let i = 0; i < 2000; i++) {
    const id = newIdentifier()
    const token = newToken(id)
    if (token.length !== SERVICE_TOKEN_LENGTH || !/^ght_[0-9A-Za-z]{61}$/.test(token)) t.fail(`bad shape: ${token.length}`)
    const parsed = parseToken(token)
    if (!('id' in parsed) || parsed.id !== id) t.fail('does not parse back')
  }
  t.equal(SERVICE_TOKEN_LENGTH, 65)
})

t.test('a changed character, a wrong length or alphabet is malformed, never a lookup', async (t) => {
  const token = newToken(newIdentifier())
  t.same(parseToken(token.slice(0, -1)), { malformed: 'length' })
  t.same(parseToken(`${token.slice(0, 30)}-${token.slice(31)}`), { malformed: 'alphabet' })
  const swapped = `${token.slice(0, 30)}${token[30] === 'Z' ? 'Y' : 'Z'}${token.slice(31)}`
  t.same(parseToken(swapped), { malformed: 'checksum' })
  t.equal(tokenDigest(token).length, 32)
})
