import type { Test } from 'tap'
import { decodeProtectedHeader } from 'jose'
import { manualClock } from '../fixtures/clock.ts'
import type { RealKeycloak } from '../fixtures/keycloak-real.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { gatehouseFor } from './helpers.ts'

const KEY_PROVIDER = 'org.keycloak.keys.KeyProvider'

/** The realm's published signing key ids (`/certs`, `use: sig`). */
async function publishedKids (kc: RealKeycloak): Promise<string[]> {
  const body = await (await fetch(`${kc.issuer}/protocol/openid-connect/certs`)).json() as { keys: Array<{ kid: string, use?: string }> }
  return body.keys.filter((k) => k.use === 'sig').map((k) => k.kid)
}

function jwksRefreshes (metrics: string): number {
  return Number(/gatehouse_jwks_refresh_total\{result="success"\} (\d+)/.exec(metrics)?.[1] ?? 0)
}

/**
 * Key rotation as an administrator does it in Keycloak: a new RSA key provider with a higher
 * priority signs from then on, the old key stays published until it is disabled.
 */
export async function keyTests (t: Test, kc: RealKeycloak): Promise<void> {
  t.test('a new RSA key provider signs new tokens, accepted after one JWKS refresh; the disabled old key is refused', async (t) => {
    const clock = manualClock()
    const { gatehouse, upstream } = await gatehouseFor(t, kc, { clock })
    const bearer = (token: unknown): Record<string, string> => ({ authorization: `Bearer ${String(token)}` })
    const metrics = async (): Promise<string> => await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()

    const before = await kc.passwordGrant('alice', 'alice-password')
    const oldKid = decodeProtectedHeader(String(before.access_token)).kid
    t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(before.access_token) })).status, 200)

    const realmId = ((await kc.admin('GET', '')).body as { id: string }).id
    const created = await kc.admin('POST', '/components', {
      name: 'rsa-rotated', providerId: 'rsa-generated', providerType: KEY_PROVIDER, parentId: realmId,
      config: { priority: ['200'], keySize: ['2048'], algorithm: ['RS256'], active: ['true'], enabled: ['true'] }
    })
    t.equal(created.status, 201, 'the key provider was added')

    const after = await kc.passwordGrant('alice', 'alice-password')
    const newKid = decodeProtectedHeader(String(after.access_token)).kid
    t.not(newKid, oldKid, 'new tokens carry the new kid')
    t.same((await publishedKids(kc)).sort(), [oldKid, newKid].sort(), 'both keys are published')

    // Past the unknown-kid rate limit (keycloak.jwks.min_refresh_interval_seconds, 10 s) of start-up's refresh.
    clock.advance(11_000)
    const refreshesBefore = jwksRefreshes(await metrics())
    t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(after.access_token) })).status, 200, 'the new kid is accepted')
    const another = await kc.passwordGrant('bob', 'bob-password')
    t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(another.access_token) })).status, 200)
    t.equal(jwksRefreshes(await metrics()) - refreshesBefore, 1, 'after exactly one JWKS refresh')
    t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(before.access_token) })).status, 200, 'the old key still verifies while published')

    const old = ((await kc.admin('GET', `/components?type=${KEY_PROVIDER}`)).body as Array<{ id: string, name: string, config: Record<string, string[]> }>).find((c) => c.name === 'rsa-generated')
    t.ok(old, 'the realm\'s original RSA provider')
    const disabled = await kc.admin('PUT', `/components/${old?.id as string}`, { ...old, config: { ...old?.config, enabled: ['false'] } })
    t.equal(disabled.status, 204)
    t.same(await publishedKids(kc), [newKid], 'the old key is no longer published')

    // Gatehouse learns it on its next periodic refresh (keycloak.jwks.refresh_interval_seconds).
    t.equal(await gatehouse.app.keycloak.jwks.refresh('interval'), true)
    const seen = upstream.requests.length
    const refused = await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(before.access_token) })
    t.equal(refused.status, 401, 'a token signed with the disabled key is refused, though it was accepted before')
    t.equal(upstream.requests.length, seen, 'and the app got nothing')
    t.equal(gatehouse.log.entries().findLast((e) => e.msg === 'request')?.reason, 'token_unknown_kid')
    t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(after.access_token) })).status, 200, 'the new key goes on working')
  })
}
