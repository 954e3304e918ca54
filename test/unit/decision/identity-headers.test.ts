import t from 'tap'
import { Value } from '@sinclair/typebox/value'
import { HeadersSchema, type HeadersConfig } from '../../../src/config/schema.ts'
import { spoofableHeaders } from '../../../src/decision/identity-headers.ts'

const defaults = (overrides: Record<string, unknown> = {}): HeadersConfig =>
  Value.Default(HeadersSchema, structuredClone(overrides)) as HeadersConfig

t.test('one spoofable list: every configured name in both spellings, the X-Auth-Request family by test', async (t) => {
  const spoofable = spoofableHeaders(defaults({ user: 'X-Remote-User' }))
  t.ok(spoofable.names.includes('x-remote-user'))
  t.ok(spoofable.names.includes('x_remote_user'), 'the underscore spelling too, for gateways that forward it')
  t.ok(spoofable.names.includes('x-auth-request-email'))
  t.notOk(spoofable.names.includes('authorization'), 'Authorization only when Gatehouse sets it')
  for (const name of ['X-Remote-User', 'x_remote_user', 'X-Auth-Request-Anything', 'x_auth_request_roles']) t.ok(spoofable.test(name), name)
  for (const name of ['authorization', 'cookie', 'x-remote-userx', 'x-request-id']) t.notOk(spoofable.test(name), name)
  const withAuthorization = spoofableHeaders(defaults({ pass_authorization_header: true }))
  t.ok(withAuthorization.names.includes('authorization'))
  t.ok(withAuthorization.test('Authorization'))
})
