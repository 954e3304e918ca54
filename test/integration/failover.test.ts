import t from 'tap'
import { startCluster } from '../fixtures/cluster.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { manualClock } from '../fixtures/clock.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { fetchDiscovery } from '../../src/keycloak/metadata.ts'
import { keycloakFetch } from '../../src/keycloak/http.ts'
import type { FaultMode } from '../fixtures/fault-proxy.ts'

/** Requests the pool sent a server (of one operation, or all), from its latency histogram. */
async function requestsTo (gatehouse: { adminUrl: string }, server: string, operation?: string): Promise<number> {
  const text = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  let total = 0
  for (const line of text.split('\n')) {
    if (line.startsWith('gatehouse_keycloak_request_duration_seconds_count{') && line.includes(`server="${server}"`) && (operation === undefined || line.includes(`operation="${operation}"`))) {
      total += Number(line.split(' ').at(-1))
    }
  }
  return total
}

const FAULTS: Array<[FaultMode, { delayMs?: number }, string]> = [
  ['refuse', {}, 'refused'],
  ['blackhole', {}, 'timeout'],
  ['http5xx', {}, 'http_5xx'],
  ['delay', { delayMs: 5000 }, 'timeout'],
  ['reset', {}, 'reset']
]

for (const [mode, opts, kind] of FAULTS) {
  t.test(`${mode}: the breaker opens after failure_threshold failures, and then no request waits on Keycloak`, async (t) => {
    const cluster = await startCluster(t, 1)
    const [server] = cluster.servers
    if (server === undefined) return
    const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings({ keycloak: { jwks: { min_refresh_interval_seconds: 0 } } })), { clock: manualClock() })
    await gatehouse.started
    const pool = gatehouse.app.keycloak.pool
    await server.setMode(mode, opts)

    for (let i = 1; i <= 3; i++) {
      t.equal(await gatehouse.app.keycloak.jwks.refresh('manual'), false)
      t.equal(pool.status()[0]?.state, i < 3 ? 'closed' : 'open', `after ${i} failure(s)`)
      t.equal(pool.status()[0]?.lastErrorKind, kind)
    }
    const sent = await requestsTo(gatehouse, server.url)
    await t.rejects(pool.call('health', fetchDiscovery), { code: 'ERR_KEYCLOAK_CIRCUIT_OPEN' }, 'a call fails at once')
    // A token with a key id nobody knows would make Gatehouse ask Keycloak: not while the circuit is open.
    const unknown = await cluster.standin.mintAccessToken({}, { header: { kid: 'rotated-in-during-outage' } })
    const res = await rawRequest(gatehouse.proxyUrl, '/x', { headers: { authorization: `Bearer ${unknown}` } })
    t.equal(res.status, 401)
    t.equal(await requestsTo(gatehouse, server.url), sent, 'not one request was sent while the circuit was open')
    const known = (await cluster.standin.passwordGrant('alice', 'alice-password').catch(() => null))?.access_token
    if (known !== undefined) t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: { authorization: `Bearer ${known}` } })).status, 200, 'known tokens still pass')
  })
}

t.test('flapping: failures below the threshold are forgiven by a success; consecutive ones open the circuit', async (t) => {
  const cluster = await startCluster(t, 1)
  const [server] = cluster.servers
  if (server === undefined) return
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()), { clock: manualClock() })
  await gatehouse.started
  const pool = gatehouse.app.keycloak.pool
  const refresh = (): Promise<boolean> => gatehouse.app.keycloak.jwks.refresh('manual')
  for (let i = 0; i < 4; i++) {
    await server.setMode('refuse')
    await refresh()
    await refresh()
    await server.setMode('pass')
    t.equal(await refresh(), true)
    t.equal(pool.status()[0]?.state, 'closed', `flap ${i + 1}: two failures then a success`)
  }
  await server.setMode('reset')
  for (let i = 0; i < 3; i++) await refresh()
  t.equal(pool.status()[0]?.state, 'open')
})

t.test('priority: a dead primary fails over within one call; after the cooldown one probe brings it back', async (t) => {
  const cluster = await startCluster(t, 2)
  const [primary, backup] = cluster.servers
  if (primary === undefined || backup === undefined) return
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()), { clock })
  await gatehouse.started
  const pool = gatehouse.app.keycloak.pool
  const jwks = gatehouse.app.keycloak.jwks

  t.equal(await jwks.refresh('manual'), true)
  t.equal(await requestsTo(gatehouse, backup.url, 'jwks'), 0, 'the backup is not used while the primary is healthy')

  await primary.setMode('blackhole')
  t.equal(await jwks.refresh('manual'), true, 'one call: the black-holed primary timed out and the backup answered')
  t.equal(await requestsTo(gatehouse, backup.url, 'jwks'), 1)
  t.equal(pool.status()[0]?.lastErrorKind, 'timeout')
  await jwks.refresh('manual')
  await jwks.refresh('manual')
  t.equal(pool.status()[0]?.state, 'open')
  const primaryJwks = await requestsTo(gatehouse, primary.url, 'jwks')
  t.equal(await jwks.refresh('manual'), true)
  t.equal(await requestsTo(gatehouse, primary.url, 'jwks'), primaryJwks, 'an open primary is skipped without being called')

  await primary.setMode('pass')
  await gatehouse.app.keycloak.health.round()
  t.equal(await requestsTo(gatehouse, primary.url, 'health'), 1, 'no probe before the cooldown (only the start-up check)')
  clock.advance(60_000)
  await Promise.all([gatehouse.app.keycloak.health.round(), gatehouse.app.keycloak.health.round()])
  t.equal(await requestsTo(gatehouse, primary.url, 'health'), 2, 'exactly one probe after the cooldown')
  t.equal(pool.status()[0]?.state, 'closed')
  const backupBefore = await requestsTo(gatehouse, backup.url, 'jwks')
  await jwks.refresh('manual')
  t.equal(await requestsTo(gatehouse, backup.url, 'jwks'), backupBefore, 'traffic is back on the primary')
  t.equal(await requestsTo(gatehouse, primary.url, 'jwks'), primaryJwks + 1)
})

t.test('4xx answers never open a breaker: Keycloak is up and said no', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()), { clock: manualClock() })
  await gatehouse.started
  const pool = gatehouse.app.keycloak.pool
  for (let i = 0; i < 10; i++) {
    await t.rejects(pool.call('token', async (target) => keycloakFetch(target.backChannel(`${cluster.standin.issuer}/protocol/openid-connect/token`), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: cluster.standin.clientId, client_secret: 'wrong' })
    }, target)), { code: 'ERR_KEYCLOAK_REJECTED' })
  }
  t.match(pool.status()[0], { state: 'closed', consecutiveFailures: 0 })
  t.equal(gatehouse.app.mode.mode, 'normal')
})

t.test('round_robin and random spread calls over the healthy servers and skip an open one', async (t) => {
  for (const strategy of ['round_robin', 'random']) {
    const cluster = await startCluster(t, 3)
    const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings({ strategy })), { clock: manualClock() })
    await gatehouse.started
    const pool = gatehouse.app.keycloak.pool
    for (let i = 0; i < 30; i++) await pool.call('discovery', fetchDiscovery)
    const used = await Promise.all(cluster.servers.map((s) => requestsTo(gatehouse, s.url, 'discovery')))
    t.ok(used.every((n) => n > 0), `${strategy}: every healthy server was used (${used.join(', ')})`)
    await cluster.servers[1]?.setMode('refuse')
    while (pool.status()[1]?.state !== 'open') await pool.call('discovery', fetchDiscovery)
    const before = await requestsTo(gatehouse, cluster.servers[1]?.url ?? '', 'discovery')
    for (let i = 0; i < 30; i++) await pool.call('discovery', fetchDiscovery)
    t.equal(await requestsTo(gatehouse, cluster.servers[1]?.url ?? '', 'discovery'), before, `${strategy}: the open server was never picked`)
  }
})
