import t from 'tap'
import { startCluster } from '../fixtures/cluster.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { manualClock } from '../fixtures/clock.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import type { StatusReport } from '../../src/admin/status.ts'

interface Observed { status: StatusReport, modeMetric: Record<string, number>, circuitMetric: Record<string, number> }

/** What /status and /metrics say now. */
async function observe (adminUrl: string): Promise<Observed> {
  const status = await (await fetch(`${adminUrl}/status`)).json() as StatusReport
  const text = await (await fetch(`${adminUrl}/metrics`)).text()
  const modeMetric: Record<string, number> = {}
  const circuitMetric: Record<string, number> = {}
  for (const line of text.split('\n')) {
    const mode = /^gatehouse_mode\{mode="(\w+)"\} (\d+)$/.exec(line)
    if (mode !== null) modeMetric[mode[1] as string] = Number(mode[2])
    const circuit = /^gatehouse_circuit_state\{server="([^"]+)"\} (\d+)$/.exec(line)
    if (circuit !== null) circuitMetric[circuit[1] as string] = Number(circuit[2])
  }
  return { status, modeMetric, circuitMetric }
}

const STATE_VALUE = { closed: 0, half_open: 1, open: 2 }

t.test('the mode follows the servers through an outage and back, logged once per change, /status and metrics agreeing', async (t) => {
  // Tokens outlive the hour this test moves the clock through.
  const cluster = await startCluster(t, 2, { accessTokenTtl: 3 * 3600 })
  const [a, b] = cluster.servers
  if (a === undefined || b === undefined) return
  const clock = manualClock()
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings({ keycloak: { resilience: { failure_threshold: 2, cooldown_seconds: 30, token_grace_period_hours: 1 } } })), { clock })
  await gatehouse.started
  const jwks = gatehouse.app.keycloak.jwks
  await jwks.refresh('manual')
  const token = (await cluster.standin.passwordGrant('alice', 'alice-password')).access_token

  const expectState = async (label: string, mode: string, circuits: [string, string]): Promise<void> => {
    const seen = await observe(gatehouse.adminUrl)
    t.equal(seen.status.mode, mode, `${label}: /status says ${mode}`)
    t.same(seen.modeMetric, { normal: mode === 'normal' ? 1 : 0, degraded: mode === 'degraded' ? 1 : 0, offline: mode === 'offline' ? 1 : 0 }, `${label}: gatehouse_mode agrees`)
    t.same(seen.status.keycloak.servers.map((s) => s.state), circuits, `${label}: /status circuits`)
    t.same([seen.circuitMetric[a.url], seen.circuitMetric[b.url]], circuits.map((c) => STATE_VALUE[c as keyof typeof STATE_VALUE]), `${label}: gatehouse_circuit_state agrees`)
    t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: { authorization: `Bearer ${token}` } })).status, 200, `${label}: a valid token still passes`)
  }

  await expectState('start', 'normal', ['closed', 'closed'])

  await a.setMode('refuse')
  await jwks.refresh('manual')
  await jwks.refresh('manual')
  await expectState('primary dead', 'normal', ['open', 'closed'])

  await b.setMode('blackhole')
  await jwks.refresh('manual')
  await jwks.refresh('manual')
  await expectState('both dead', 'degraded', ['open', 'open'])

  clock.advance(3_600_000)
  await expectState('past the grace period', 'offline', ['open', 'open'])

  await a.setMode('pass')
  await b.setMode('pass')
  await gatehouse.app.keycloak.health.round()
  await expectState('recovered', 'normal', ['closed', 'closed'])

  const changes = gatehouse.log.entries().filter((e) => e.module === 'mode' && typeof e.msg === 'string' && e.msg.startsWith('mode changed'))
  t.same(changes.map((e) => `${String(e.from)}>${String(e.to)}`), ['normal>degraded', 'degraded>offline', 'offline>normal'], 'each change logged once')
  t.ok(changes.every((e) => e.level === 40), 'at warn')
  const opened = gatehouse.log.entries().filter((e) => e.msg === 'keycloak circuit opened; server skipped until its cooldown passes')
  t.same(opened.map((e) => e.server), [a.url, b.url], 'each circuit opening logged once, at warn')
})

t.test('start-up with every server dead: ready at once, tokens served from the stored JWKS, mode reported', async (t) => {
  const cluster = await startCluster(t, 2)
  const dir = t.testdir()
  const config = writeConfig(dir, cluster.settings())
  const first = await startGatehouse({ teardown: () => {} }, config)
  await first.started
  await first.stop()

  await Promise.all(cluster.servers.map((s) => s.setMode('refuse')))
  const gatehouse = await startGatehouse(t, config)
  t.equal((await fetch(`${gatehouse.adminUrl}/readyz`)).status, 200, 'ready before Keycloak was ever reached')
  const token = await cluster.standin.mintAccessToken()
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: { authorization: `Bearer ${token}` } })).status, 200)
  await gatehouse.started
  const seen = await observe(gatehouse.adminUrl)
  t.equal(seen.status.mode, 'degraded', 'no server answered; the stored keys are young')
  t.equal(seen.status.keycloak.reachable, false)
  t.ok(seen.status.keycloak.servers.every((s) => s.last_error_kind === 'refused'))
  t.equal(seen.modeMetric.degraded, 1)
  const settled = gatehouse.log.entries().find((e) => e.module === 'mode' && e.msg === 'mode is degraded')
  t.ok(settled, 'the start-up mode is logged once')
})

t.test('the browser is sent to the public issuer; Gatehouse itself only calls the back channel', async (t) => {
  const cluster = await startCluster(t, 1, { issuerBase: 'https://sso.example.test' })
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()))
  await gatehouse.started
  const token = (await cluster.standin.passwordGrant('bob', 'bob-password')).access_token
  t.equal(JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).iss, 'https://sso.example.test/realms/test')
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: { authorization: `Bearer ${token}` } })).status, 200, 'keys fetched over the back channel verify public-issuer tokens')
  t.equal(gatehouse.app.keycloak.metadata.endpoints.authorization, 'https://sso.example.test/realms/test/protocol/openid-connect/auth', 'the published, public authorization endpoint')
  t.equal(gatehouse.app.keycloak.metadata.layout.onServer(gatehouse.app.keycloak.metadata.endpoints.token as string, cluster.servers[0]?.url ?? ''),
    `${cluster.servers[0]?.url}/realms/test/protocol/openid-connect/token`, 'moved onto the back channel')
  const status = await gatehouse.app.status()
  t.same(status.keycloak.discovery.issuer_matches, true)
})

t.test('a Keycloak that names another issuer is reported, and its tokens are refused', async (t) => {
  const cluster = await startCluster(t, 1)
  const wrongIssuer = 'https://sso.example.test/realms/test'
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings({ keycloak: { issuer: wrongIssuer } })))
  await gatehouse.started
  const warning = gatehouse.log.entries().find((e) => e.discovered_issuer === cluster.standin.issuer)
  t.match(warning, { level: 40, configured_issuer: wrongIssuer })
  t.equal((await gatehouse.app.status()).keycloak.discovery.issuer_matches, false)
  const token = (await cluster.standin.passwordGrant('bob', 'bob-password')).access_token
  t.equal((await rawRequest(gatehouse.proxyUrl, '/x', { headers: { authorization: `Bearer ${token}` } })).status, 401)
})
