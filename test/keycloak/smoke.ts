import type { Test } from 'tap'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { GATEHOUSE_CLIENT, REPORTING_CLIENT, type RealKeycloak } from '../fixtures/keycloak-real.ts'

/**
 * What the realm file promises, read back from the running Keycloak: the tokens carry the
 * claims Gatehouse reads (protocol-facts §C.3), the clients have the settings an operator must
 * copy (README, "Running against a real Keycloak").
 */
export async function smokeTests (t: Test, kc: RealKeycloak): Promise<void> {
  t.test('discovery names the public issuer and back-channel logout with sid', async (t) => {
    const res = await fetch(`${kc.issuer}/.well-known/openid-configuration`)
    t.equal(res.status, 200)
    const doc = await res.json() as Record<string, unknown>
    t.equal(doc.issuer, kc.issuer)
    t.equal(doc.token_endpoint, `${kc.issuer}/protocol/openid-connect/token`)
    t.equal(doc.jwks_uri, `${kc.issuer}/protocol/openid-connect/certs`)
    t.equal(doc.end_session_endpoint, `${kc.issuer}/protocol/openid-connect/logout`)
    t.equal(doc.backchannel_logout_supported, true)
    t.equal(doc.backchannel_logout_session_supported, true)
  })

  t.test("alice's access token: composite realm roles expanded, the client role, full group paths", async (t) => {
    const tokens = await kc.passwordGrant('alice', 'alice-password')
    const access = decodeJwt(String(tokens.access_token))
    t.equal(decodeProtectedHeader(String(tokens.access_token)).alg, 'RS256')
    t.match(access, { iss: kc.issuer, typ: 'Bearer', azp: 'gatehouse', preferred_username: 'alice', email: 'alice@example.test', groups: ['/staff/admins'] })
    t.same([...(access.realm_access as { roles: string[] }).roles].sort(), ['admin', 'editor', 'user'], 'admin holds editor, which holds user')
    t.same(access.resource_access, { gatehouse: { roles: ['operator'] } })
    t.type(access.sid, 'string')
    t.equal(decodeJwt(String(tokens.id_token)).typ, 'ID')
    t.equal(decodeJwt(String(tokens.refresh_token)).typ, 'Refresh')
  })

  t.test("the reporting client's service-account token names gatehouse in aud (audience mapper)", async (t) => {
    const answer = await kc.token(REPORTING_CLIENT, { grant_type: 'client_credentials' })
    t.equal(answer.status, 200)
    t.match(decodeJwt(String(answer.body.access_token)), { aud: 'gatehouse', azp: 'reporting', typ: 'Bearer' })
  })

  t.test("gatehouse's service account holds manage-users, view-users and query-groups", async (t) => {
    const answer = await kc.token(GATEHOUSE_CLIENT, { grant_type: 'client_credentials' })
    t.equal(answer.status, 200)
    const roles = (decodeJwt(String(answer.body.access_token)).resource_access as Record<string, { roles: string[] }>)['realm-management']?.roles ?? []
    for (const role of ['manage-users', 'view-users', 'query-groups']) t.ok(roles.includes(role), role)
    t.notOk(roles.includes('realm-admin'), 'and not realm-admin')
  })

  // The answers the stand-in (test/fixtures/keycloak-standin*) copies: checked here against the real server.
  t.test("Keycloak's token-endpoint refusals: statuses, codes and words", async (t) => {
    const post = async (body: Record<string, string>, basic?: string) => {
      const res = await fetch(`${kc.issuer}/protocol/openid-connect/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...(basic !== undefined ? { authorization: `Basic ${Buffer.from(basic).toString('base64')}` } : {}) },
        body: new URLSearchParams(body).toString()
      })
      return [res.status, await res.json(), res.headers.get('www-authenticate')]
    }
    const credentials = { grant_type: 'password', username: 'alice', password: 'alice-password' }
    t.same(await post({ ...credentials, password: 'nope' }, 'gatehouse:gatehouse-secret'), [400, { error: 'invalid_grant', error_description: 'Invalid user credentials' }, null], 'wrong password')
    t.same(await post({ ...credentials, username: 'mallory' }, 'gatehouse:gatehouse-secret'), [400, { error: 'invalid_grant', error_description: 'Invalid user credentials' }, null], 'unknown user')
    t.same(await post(credentials, 'gatehouse:wrong'), [401, { error: 'unauthorized_client', error_description: 'Invalid client or Invalid client credentials' }, null], 'wrong client secret')
    t.same(await post({ ...credentials, client_id: 'gatehouse' }), [401, { error: 'unauthorized_client', error_description: 'Invalid client or Invalid client credentials' }, null], 'confidential client without its secret')
    t.same(await post({ grant_type: 'client_credentials' }, 'nosuch:x'), [401, { error: 'invalid_client', error_description: 'Invalid client or Invalid client credentials' }, null], 'unknown client')
    t.same(await post(credentials, 'reporting:reporting-secret'), [400, { error: 'unauthorized_client', error_description: 'Client not allowed for direct access grants' }, null], 'client without direct access grants')
  })

  t.test('the gatehouse client: PKCE S256, back-channel logout with sid, refresh-token rotation on', async (t) => {
    const client = (await kc.admin('GET', `/clients/${await kc.clientUuid('gatehouse')}`)).body as { attributes: Record<string, string>, publicClient: boolean }
    t.equal(client.publicClient, false)
    t.equal(client.attributes['pkce.code.challenge.method'], 'S256')
    t.match(client.attributes['backchannel.logout.url'], /\/_gatehouse\/backchannel-logout$/)
    t.equal(client.attributes['backchannel.logout.session.required'], 'true')
    const realm = await fetch(`${kc.baseUrl}/admin/realms/${kc.realm}`, { headers: { authorization: `Bearer ${await kc.adminToken()}` } }).then(async (r) => await r.json() as Record<string, unknown>)
    t.equal(realm.revokeRefreshToken, true)
    t.equal(realm.refreshTokenMaxReuse, 0)
  })
}
