import t from 'tap'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startFaultProxy } from '../fixtures/fault-proxy.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { captureLog, keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { manualClock } from '../fixtures/clock.ts'

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

/** A stand-in realm behind a fault proxy, and an upstream; all closed when the test ends. */
async function rig (t: { teardown: (fn: () => unknown) => void }) {
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const fault = await startFaultProxy({ target: standin.baseUrl })
  t.teardown(() => fault.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  return { standin, fault, upstream, settings: keycloakSettings(standin, upstream.url, fault.url) }
}

/** A stand-in realm and an upstream (no fault proxy), with Gatehouse in front on a manual clock. */
async function onManualClock (t: { teardown: (fn: () => unknown) => void, testdir: () => string }) {
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), keycloakSettings(standin, upstream.url)), { clock })
  return { standin, upstream, clock, gatehouse }
}

t.test('restarted while Keycloak is black-holed, Gatehouse starts at once and validates from the stored JWKS', async (t) => {
  const { standin, fault, upstream } = await rig(t)
  const dir = t.testdir()
  // A deadline far longer than any test: if start-up waited on Keycloak, this test would hang.
  const settings = { upstream: { url: upstream.url }, keycloak: { issuer: standin.issuer, server: fault.url, client_id: standin.clientId, timeout_ms: 60_000 } }
  const config = writeConfig(dir, settings)

  const first = await startGatehouse({ teardown: () => {} }, config)
  t.equal(await first.app.keycloak.jwks.refresh('manual'), true, 'the first run fetched and stored the JWKS')
  await first.stop()

  await fault.setMode('blackhole')
  const connectionsBefore = fault.connectionCount().byMode.blackhole
  const second = await startGatehouse(t, config)
  // Ready although the start-up refresh is still held open by the black hole.
  await fault.waitForConnections(fault.connectionCount().total - fault.connectionCount().byMode.blackhole + connectionsBefore + 1)
  t.ok(fault.openConnections() >= 1, 'the start-up JWKS refresh is still hanging')
  const ready = await fetch(`${second.adminUrl}/readyz`)
  t.equal(ready.status, 200, 'ready while Keycloak does not answer')

  const token = (await standin.passwordGrant('alice', 'alice-password')).access_token
  const res = await rawRequest(second.proxyUrl, '/x', { headers: bearer(token) })
  t.equal(res.status, 200, 'a token signed with a stored key validates')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-preferred-username'], 'alice')

  const status = await (await fetch(`${second.adminUrl}/status`)).json() as { jwks: { keys: number, source: string } }
  t.equal(status.jwks.keys, standin.publishedKeys().filter((k) => k.use !== 'enc').length)
  t.equal(status.jwks.source, fault.url)
})

t.test('a key rotated at Keycloak is picked up on the first token with the new kid', async (t) => {
  const { standin, clock, gatehouse } = await onManualClock(t)
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const oldKid = standin.signingKey().kid
  // Later than the minimum refresh interval (10 s) after the last fetch, as a real rotation is.
  clock.advance(11_000)

  const newKey = await standin.rotateKeys({ keepOld: false })
  t.not(newKey.kid, oldKid)
  standin.resetCounts()
  const token = (await standin.passwordGrant('bob', 'bob-password')).access_token
  const res = await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(token) })
  t.equal(res.status, 200)
  t.equal(standin.countOf('/certs'), 1, 'exactly one JWKS fetch for the new kid')
  t.ok(gatehouse.app.keycloak.jwks.keyIds().includes(newKey.kid))
  t.notOk(gatehouse.app.keycloak.jwks.keyIds().includes(oldKid), 'the withdrawn key is gone')

  const again = await rawRequest(gatehouse.proxyUrl, '/y', { headers: bearer((await standin.passwordGrant('alice', 'alice-password')).access_token) })
  t.equal(again.status, 200)
  t.equal(standin.countOf('/certs'), 1, 'known kids cause no fetch')
})

t.test('a rotation that withdraws the old key forgets its cached tokens; one that keeps it forgets nothing', async (t) => {
  const { standin, upstream, gatehouse } = await onManualClock(t)
  const { jwks } = gatehouse.app.keycloak
  await jwks.refresh('manual')
  const first = (await standin.passwordGrant('alice', 'alice-password')).access_token
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(first) })).status, 200)

  // A rotation that keeps the old key published: its tokens stay remembered.
  await standin.rotateKeys({ keepOld: true })
  t.equal(await jwks.refresh('manual'), true)
  t.equal(gatehouse.app.verifier.cacheSize, 1, 'nothing withdrawn, nothing forgotten')
  const second = (await standin.passwordGrant('bob', 'bob-password')).access_token
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(second) })).status, 200)
  t.equal(gatehouse.app.verifier.cacheSize, 2)

  // The next rotation withdraws both earlier keys, found by the background refresh.
  await standin.rotateKeys({ keepOld: false })
  t.equal(await jwks.refresh('interval'), true)
  t.equal(gatehouse.app.verifier.cacheSize, 0, 'every token of a withdrawn key is forgotten at once')
  const withdrawn = gatehouse.log.entries().findLast((e) => e.msg === 'jwks keys withdrawn')
  t.equal((withdrawn?.kids as string[] | undefined)?.length, 2)
  const before = upstream.requests.length
  for (const token of [first, second]) {
    const res = await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(token) })
    t.equal(res.status, 401)
    t.equal(gatehouse.log.entries().findLast((e) => e.msg === 'request')?.reason, 'token_unknown_kid')
  }
  t.equal(upstream.requests.length - before, 0, 'the upstream got nothing')
})

t.test('unknown kids refresh at most once per minimum interval, and never while Keycloak refuses', async (t) => {
  const { standin, fault, settings } = await rig(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...settings, keycloak: { ...(settings.keycloak as object), jwks: { min_refresh_interval_seconds: 3600 } } }))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  standin.resetCounts()

  // A forger's kid: the one permitted refresh happens, finds nothing, and later ones are refused without I/O.
  const forged = await standin.mintAccessToken({}, { header: { kid: 'forged-kid' } })
  for (let i = 0; i < 5; i++) {
    const res = await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(forged) })
    t.equal(res.status, 401)
  }
  t.equal(standin.countOf('/certs'), 0, 'the last refresh was too recent: no fetch at all')

  // With the interval elapsed but Keycloak refusing, the refresh fails and the request is still a 401.
  const fresh = await startGatehouse(t, writeConfig(t.testdir(), settings))
  await fresh.app.keycloak.jwks.refresh('manual')
  await fault.setMode('refuse')
  standin.resetCounts()
  await standin.rotateKeys({ keepOld: false })
  const unknown = await standin.mintAccessToken()
  const res = await rawRequest(fresh.proxyUrl, '/x', { headers: bearer(unknown) })
  t.equal(res.status, 401)
  const line = fresh.log.entries().findLast((e) => e.msg === 'request')
  t.equal(line?.reason, 'token_unknown_kid')
  t.equal(standin.countOf('/certs'), 0, 'nothing reached Keycloak')
})

t.test('a failed refresh keeps the last good keys, whatever the failure', async (t) => {
  const { standin, fault, settings } = await rig(t)
  const log = captureLog('debug')
  // A high threshold keeps the circuit closed: this test is about each failure, not the breaker.
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...settings, keycloak: { ...(settings.keycloak as object), timeout_ms: 300, resilience: { failure_threshold: 10 } } }), { log })
  t.equal(await gatehouse.app.keycloak.jwks.refresh('manual'), true)
  const kids = gatehouse.app.keycloak.jwks.keyIds()
  const token = (await standin.passwordGrant('alice', 'alice-password')).access_token

  for (const mode of ['http5xx', 'blackhole', 'refuse', 'reset', 'delay'] as const) {
    await fault.setMode(mode, { delayMs: 5000 })
    t.equal(await gatehouse.app.keycloak.jwks.refresh('manual'), false, `${mode}: the refresh failed`)
    t.same(gatehouse.app.keycloak.jwks.keyIds(), kids, `${mode}: the keys are unchanged`)
    const res = await rawRequest(gatehouse.proxyUrl, '/x', { headers: bearer(token) })
    t.equal(res.status, 200, `${mode}: tokens still validate`)
  }
  const failures = log.entries().filter((e) => e.msg === 'jwks refresh failed; keeping the last good keys').map((e) => e.kind)
  t.same(failures, ['http_5xx', 'timeout', 'refused', 'reset', 'timeout'], 'each failure is classified')

  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /gatehouse_jwks_refresh_total\{result="failure"\} 5/)
  t.match(metrics, /gatehouse_keycloak_request_duration_seconds_count\{server="[^"]+",operation="jwks",result="timeout"\} 2/)

  await fault.setMode('pass')
  t.equal(await gatehouse.app.keycloak.jwks.refresh('manual'), true, 'back to normal once Keycloak answers')
})

t.test('with Keycloak disabled by feature flag no call is ever made', async (t) => {
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const dir = t.testdir()
  const enabled = await startGatehouse({ teardown: () => {} }, writeConfig(dir, keycloakSettings(standin, upstream.url)))
  await enabled.app.keycloak.jwks.refresh('manual')
  await enabled.stop()
  standin.resetCounts()
  const disabled = await startGatehouse(t, writeConfig(dir, { ...keycloakSettings(standin, upstream.url), feature_flags: { keycloak_enabled: false } }))
  const token = (await standin.passwordGrant('alice', 'alice-password')).access_token
  standin.resetCounts()
  t.equal((await rawRequest(disabled.proxyUrl, '/x', { headers: bearer(token) })).status, 200)
  t.equal(standin.countOf('/certs'), 0)
  const status = await (await fetch(`${disabled.adminUrl}/status`)).json() as { mode: string, keycloak: { enabled: boolean } }
  t.equal(status.keycloak.enabled, false)
  t.equal(status.mode, 'degraded', 'keys at hand, Keycloak not in use')
})
