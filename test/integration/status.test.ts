import t from 'tap'
import { createServer } from 'node:net'
import { startCluster } from '../fixtures/cluster.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { runGatehouse } from '../fixtures/cli.ts'
import { join } from 'node:path'

/** A port nothing listens on right now (asked of the kernel, never a fixed number). */
function freePort (): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer()
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
}

t.test('gatehouse status asks the running instance', async (t) => {
  const cluster = await startCluster(t, 2)
  const dir = t.testdir()
  const adminPort = await freePort()
  // A deadline a busy machine cannot miss: what is asserted is the primary's health, not its speed.
  const config = writeConfig(dir, { ...cluster.settings({ keycloak: { timeout_ms: 5000 } }), admin: { host: '127.0.0.1', port: adminPort } })
  const gatehouse = await startGatehouse(t, config)
  await gatehouse.started
  await cluster.servers[1]?.setMode('refuse')
  await gatehouse.app.keycloak.health.round()

  const json = await runGatehouse(['status', '--json', '-c', join(dir, 'config.yaml')])
  t.equal(json.code, 0, json.stderr)
  const report = JSON.parse(json.stdout) as { mode: string, source: { kind: string, url: string }, keycloak: { servers: Array<{ state: string, last_error_kind: string | null }> } }
  t.same(report.source, { kind: 'running', url: `http://127.0.0.1:${adminPort}/status` })
  t.equal(report.mode, 'normal')
  t.same(report.keycloak.servers.map((s) => s.last_error_kind), [null, null], 'the backup was healthy when last heard from')

  const text = await runGatehouse(['status', '-c', join(dir, 'config.yaml')])
  t.equal(text.code, 0)
  t.match(text.stdout, `running instance (http://127.0.0.1:${adminPort}/status)`)
  t.match(text.stdout, /^mode: +normal/m)
  t.match(text.stdout, /SERVER +STATE +FAILURES +LAST SUCCESS +LAST FAILURE +ERROR +PROBE/)
  t.match(text.stdout, new RegExp(`${cluster.servers[0]?.url} +closed +0 `))
})

t.test('with no instance running, gatehouse status reads the database and checks every server live', async (t) => {
  const cluster = await startCluster(t, 2)
  const dir = t.testdir()
  const config = writeConfig(dir, { ...cluster.settings(), admin: { host: '127.0.0.1', port: await freePort() } })
  const gatehouse = await startGatehouse({ teardown: () => {} }, config)
  await gatehouse.started
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const kids = gatehouse.app.keycloak.jwks.keyIds()
  await gatehouse.stop()

  await cluster.servers[0]?.setMode('refuse')
  const up = await runGatehouse(['status', '--json', '-c', join(dir, 'config.yaml')])
  t.equal(up.code, 0, up.stderr)
  const report = JSON.parse(up.stdout) as { mode: string, source: { kind: string, database: string }, jwks: { key_ids: string[] }, keycloak: { servers: Array<{ last_error_kind: string | null, last_success_at: string | null }> } }
  t.same(report.source, { kind: 'offline', database: join(dir, 'gatehouse.db') })
  t.same(report.jwks.key_ids, kids, 'the keys come from the database')
  t.equal(report.keycloak.servers[0]?.last_error_kind, 'refused', 'the dead server was probed')
  t.type(report.keycloak.servers[1]?.last_success_at, 'string', 'the live one answered')
  t.equal(report.mode, 'normal')

  await cluster.servers[1]?.setMode('http5xx')
  const down = await runGatehouse(['status', '-c', join(dir, 'config.yaml')])
  t.equal(down.code, 3, 'status exits 3 while the mode is degraded')
  t.match(down.stdout, 'no running instance; database')
  t.match(down.stdout, /^mode: +degraded/m)
  t.match(down.stdout, /http_5xx/)
})

t.test('/status.html shows a person the mode and every circuit', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()))
  await gatehouse.started
  const res = await fetch(`${gatehouse.adminUrl}/status.html`)
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'text/html; charset=utf-8')
  const csp = res.headers.get('content-security-policy') ?? ''
  const nonce = /style-src 'nonce-([^']+)'/.exec(csp)?.[1] ?? ''
  t.equal(csp, `default-src 'none'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`, 'a nonce for the one style sheet and script; nothing else')
  const html = await res.text()
  t.match(html, '<title>Gatehouse: normal</title>')
  t.match(html, `<td class="server" data-label="Server">${cluster.servers[0]?.url}</td>`)
  t.match(html, '>closed</span>')
  t.equal([...html.matchAll(/<(?:style|script)\b[^>]*>/g)].filter((m) => !m[0].includes(`nonce="${nonce}"`)).length, 0, 'every style and script carries the nonce')
  t.notMatch(html, /\b(?:src|href)="(?:https?:)?\/\//, 'no external asset')
})
