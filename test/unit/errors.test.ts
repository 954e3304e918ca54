import t from 'tap'
import { readFileSync } from 'node:fs'
import { GatehouseError, KeycloakUnavailable, KeycloakRejected, PathError, type ErrorCode } from '../../src/errors.ts'

const source = readFileSync(new URL('../../src/errors.ts', import.meta.url), 'utf8')
const union = source.slice(source.indexOf('export type ErrorCode ='), source.indexOf('/** Options shared'))
const codes = [...union.matchAll(/'(ERR_[A-Z_]+)'/g)].map((m) => m[1] as ErrorCode)

t.test('every error code is documented in docs/errors.md, and nothing else is', async (t) => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8')
  const documented = [...doc.matchAll(/<a id="(ERR_[A-Z_]+)"><\/a>/g)].map((m) => m[1])
  t.ok(codes.length > 10)
  t.same([...documented].sort(), [...codes].sort())
})

t.test('errors carry their code, status and cause', async (t) => {
  const cause = new Error('socket hang up')
  const unavailable = new KeycloakUnavailable('timeout', 'slow', { server: 'http://k', cause })
  t.equal(unavailable.code, 'ERR_KEYCLOAK_UNAVAILABLE')
  t.equal(unavailable.statusCode, 503)
  t.equal(unavailable.cause, cause)
  t.equal(unavailable.name, 'KeycloakUnavailable')
  t.equal(new KeycloakUnavailable('circuit_open', 'open').code, 'ERR_KEYCLOAK_CIRCUIT_OPEN')
  t.equal(new KeycloakUnavailable('disabled', 'off').code, 'ERR_KEYCLOAK_DISABLED')
  t.equal(new KeycloakUnavailable('bad_response', 'x').code, 'ERR_KEYCLOAK_BAD_RESPONSE')
  const rejected = new KeycloakRejected(401, 'no', { oauthError: 'invalid_grant' })
  t.equal(rejected.code, 'ERR_KEYCLOAK_REJECTED')
  t.equal(rejected.oauthError, 'invalid_grant')
  t.equal(new PathError('x').statusCode, 400)
  t.ok(new PathError('x') instanceof GatehouseError)
})
