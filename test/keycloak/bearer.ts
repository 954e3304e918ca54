import type { Test } from 'tap'
import { GATEHOUSE_CLIENT, OUTSIDER_CLIENT, REPORTING_CLIENT, type RealKeycloak } from '../fixtures/keycloak-real.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'

const POLICY = `
rules:
  - name: admin area
    paths: [/admin/**]
    roles: [admin]
  - name: operators
    paths: [/ops/**]
    roles: ['gatehouse:operator']
`

/** Gatehouse as a bearer-token gate in front of an echo app, with the real realm's JWKS. */
export async function bearerGatehouse (t: Test, kc: RealKeycloak, settings: Record<string, unknown> = {}) {
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const base = keycloakSettings({ issuer: kc.issuer, baseUrl: kc.baseUrl, clientId: GATEHOUSE_CLIENT.clientId, clientSecret: GATEHOUSE_CLIENT.secret }, upstream.url)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...base, ...settings }, { 'app.yaml': POLICY }))
  await gatehouse.started
  return { gatehouse, upstream }
}

export async function bearerTests (t: Test, kc: RealKeycloak): Promise<void> {
  const { gatehouse, upstream } = await bearerGatehouse(t, kc)
  const bearer = (token: unknown): Record<string, string> => ({ authorization: `Bearer ${String(token)}` })
  const alice = await kc.passwordGrant('alice', 'alice-password')
  const aliceId = (await kc.user('alice'))?.id

  t.test("a password-grant token passes, with alice's identity, expanded roles and full group paths", async (t) => {
    const res = await rawRequest(gatehouse.proxyUrl, '/admin/reports', { headers: bearer(alice.access_token) })
    t.equal(res.status, 200)
    const seen = upstream.requests.at(-1)?.headers ?? {}
    t.equal(seen['x-auth-request-user'], aliceId)
    t.equal(seen['x-auth-request-preferred-username'], 'alice')
    t.equal(seen['x-auth-request-email'], 'alice@example.test')
    t.equal(seen['x-auth-request-groups'], '/staff/admins')
    t.equal(seen['x-auth-request-mode'], 'token')
    const roles = String(seen['x-auth-request-roles']).split(',')
    for (const role of ['admin', 'editor', 'user', 'gatehouse:operator']) t.ok(roles.includes(role), role)
    const ops = await rawRequest(gatehouse.proxyUrl, '/ops/run', { headers: bearer(alice.access_token) })
    t.equal(ops.status, 200, 'the client role opens the operators route')
  })

  t.test('bob (role user, no client role) is refused the admin and operator routes with a 403', async (t) => {
    const bob = await kc.passwordGrant('bob', 'bob-password')
    const before = upstream.requests.length
    t.equal((await rawRequest(gatehouse.proxyUrl, '/admin/reports', { headers: bearer(bob.access_token) })).status, 403)
    t.equal((await rawRequest(gatehouse.proxyUrl, '/ops/run', { headers: bearer(bob.access_token) })).status, 403)
    t.equal(upstream.requests.length, before, 'the app got nothing')
  })

  t.test("the reporting client's client-credentials token passes through its audience", async (t) => {
    const answer = await kc.token(REPORTING_CLIENT, { grant_type: 'client_credentials' })
    t.equal(answer.status, 200)
    const res = await rawRequest(gatehouse.proxyUrl, '/reports/daily', { headers: bearer(answer.body.access_token) })
    t.equal(res.status, 200)
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-preferred-username'], 'service-account-reporting')
  })

  t.test('an ID token, a refresh token and a token of a client outside the audience are refused', async (t) => {
    const outsider = await kc.passwordGrant('alice', 'alice-password', OUTSIDER_CLIENT)
    const outsiderService = await kc.token(OUTSIDER_CLIENT, { grant_type: 'client_credentials' })
    const cases: Array<[string, unknown, string]> = [
      ['an ID token', alice.id_token, 'token_wrong_type'],
      // Keycloak signs refresh tokens with the realm's HMAC key (HS512), which no JWKS publishes.
      ['a refresh token', alice.refresh_token, 'token_alg_not_allowed'],
      // Keycloak puts every client whose roles a token carries into `aud` (the `roles` scope's
      // audience resolve), so with full scope alice's gatehouse:operator role would make any
      // client's token name gatehouse; the outsider has "Full scope allowed" off (realm.json).
      ["alice's token from the outsider client", outsider.access_token, 'token_wrong_audience'],
      ["the outsider's service-account token", outsiderService.body.access_token, 'token_wrong_audience']
    ]
    for (const [label, token, reason] of cases) {
      const before = upstream.requests.length
      const res = await rawRequest(gatehouse.proxyUrl, '/reports/daily', { headers: bearer(token) })
      t.equal(res.status, 401, label)
      t.match(res.headers['www-authenticate'], /^Bearer realm="gatehouse", error="invalid_token"/, label)
      t.equal(upstream.requests.length, before, `${label}: the app got nothing`)
      t.equal(gatehouse.log.entries().findLast((e) => e.msg === 'request')?.reason, reason, `${label}: ${reason}`)
    }
  })
}
