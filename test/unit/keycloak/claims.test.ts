import t from 'tap'
import { identityFromClaims, KEYCLOAK_CLAIMS, rolesFromClaims, type ClaimsReader } from '../../../src/keycloak/claims.ts'
import { identityHeaders } from '../../../src/decision/identity-headers.ts'
import { DEFAULT_HEADERS, type HeadersConfig } from '../../../src/config/schema.ts'

const reader: ClaimsReader = { mapping: KEYCLOAK_CLAIMS, clientIds: ['app'] }

t.test('realm roles as named, client roles as client:role, groups as the token spells them', async (t) => {
  const claims = { sub: 's', realm_access: { roles: ['user', 'offline_access'] }, resource_access: { app: { roles: ['editor'] }, other: { roles: ['x'] } }, groups: ['/platform/admins', 'staff'] }
  t.same(rolesFromClaims(claims, reader), ['user', 'offline_access', 'app:editor'], 'only the accepted clients\' roles')
  t.same(identityFromClaims(claims, reader, null).groups, ['/platform/admins', 'staff'])
  t.same(rolesFromClaims({ roles: 'admin' }, { mapping: { ...KEYCLOAK_CLAIMS, roles: ['roles'] }, clientIds: [] }), ['admin'], 'a single role as a string')
})

t.test('a role or group name the headers could not carry as one name is dropped, so the app never reads it as two', async (t) => {
  const claims = {
    sub: 's',
    realm_access: { roles: ['user,admin', 'ok', 'bad\r\nx-injected: 1', '', 7] },
    resource_access: { app: { roles: ['a,b', 'editor'] } },
    groups: ['/staff,/platform/admins', '/staff', 'tab\there']
  }
  const identity = identityFromClaims(claims, reader, null)
  t.same(identity.roles, ['ok', 'app:editor'])
  t.same(identity.groups, ['/staff'])
  const headers = identityHeaders(identity, { ...DEFAULT_HEADERS, pass_access_token: false, pass_authorization_header: false } satisfies HeadersConfig)
  t.equal(headers['x-auth-request-roles'], 'ok,app:editor')
  t.equal(headers['x-auth-request-groups'], '/staff')
})
