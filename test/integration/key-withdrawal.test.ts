import t from 'tap'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'

// Found against the real Keycloak (test/keycloak/keys.ts): a token verified before its key was
// disabled kept passing from the verified-token cache until it expired.
t.test('a remembered token stops passing once the realm withdraws the key that signed it', async (t) => {
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(standin, upstream.url)))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const token = (await standin.passwordGrant('alice', 'alice-password')).access_token
  const headers = { authorization: `Bearer ${token}` }
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers })).status, 200)
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers })).status, 200, 'now remembered')

  await standin.rotateKeys({ keepOld: false })
  t.equal(await gatehouse.app.keycloak.jwks.refresh('manual'), true)
  const seen = upstream.requests.length
  const res = await rawRequest(gatehouse.proxyUrl, '/x', { headers })
  t.equal(res.status, 401)
  t.equal(upstream.requests.length, seen, 'the upstream got nothing')
  t.equal(gatehouse.log.entries().findLast((e) => e.msg === 'request')?.reason, 'token_unknown_kid')
})
