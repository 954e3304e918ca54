// /status.html in headless Chromium: read by its elements' content, never by pixels. With
// SCREENSHOT_DIR set, the pages are also saved there as PNGs for a person to look at.
import t from 'tap'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import { launchChromium } from '../fixtures/browser.ts'
import { requireProgram } from '../fixtures/system-programs.ts'
import { startCluster } from '../fixtures/cluster.ts'
import { manualClock } from '../fixtures/clock.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { addLocalUser } from '../fixtures/sessions.ts'
import { rawRequest } from '../fixtures/http-client.ts'

const MINUTE = 60_000
const shots = process.env.SCREENSHOT_DIR

async function screenshot (page: Page, name: string): Promise<void> {
  if (shots === undefined || shots === '') return
  mkdirSync(shots, { recursive: true })
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true })
  // What a phone shows without scrolling, at its own size.
  await page.screenshot({ path: join(shots, `${name}-screen.png`), fullPage: false })
}

/** Waits for the page's next reload (a request made from now on) to finish loading. */
async function nextRefresh (page: Page): Promise<void> {
  const request = await page.waitForRequest((r) => r.url().endsWith('/status.html') && r.isNavigationRequest())
  await (await request.response())?.finished()
  await page.waitForLoadState('load')
}

/**
 * Reads the page. It reloads itself every second (`dashboard_refresh_seconds: 1`), and a reload
 * that lands during a read destroys the document being read; the clock is the test's, so the
 * reloaded page says the same, and the read is made again on it.
 */
async function read<T> (page: Page, what: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await what()
    } catch (err) {
      if (attempt >= 5 || !/Execution context was destroyed|navigation/i.test((err as Error).message)) throw err
      await page.waitForLoadState('load')
    }
  }
}

const text = async (page: Page, selector: string): Promise<string> => ((await read(page, async () => await page.textContent(selector))) ?? '').replace(/\s+/g, ' ').trim()

t.test('the dashboard: mode, circuits and their last hour, traffic, sync queue, sessions, local times; the mode change shows on the next refresh', async (t) => {
  if (requireProgram(t, 'chromium') === null) return
  const cluster = await startCluster(t, 2)
  const clock = manualClock(Date.parse('2025-03-04T02:00:00Z'))
  const dir = t.testdir()
  const config = writeConfig(dir, {
    ...cluster.settings(),
    auth: { primary: 'local' },
    admin: { host: '127.0.0.1', port: 0, dashboard_refresh_seconds: 1 },
    keycloak: { ...(cluster.settings().keycloak as Record<string, unknown>), resilience: { failure_threshold: 1, health_check_cache_seconds: 30 } }
  }, { 'app.yaml': 'rules:\n  - paths: [/public/**]\n    allow: public\n' })
  const gatehouse = await startGatehouse(t, config, { clock })
  await gatehouse.started
  const { app } = gatehouse
  await addLocalUser(gatehouse.db, 'carol', 'carol-local-password', ['editor'])

  const browser = await launchChromium(t)
  // The reader is in Tokyo: local times are shown in the browser's zone, beside UTC.
  const context = await browser.newContext({ timezoneId: 'Asia/Tokyo', locale: 'en-GB', viewport: { width: 390, height: 844 }, deviceScaleFactor: 1 })
  t.teardown(() => context.close())

  // Some traffic over a few minutes: allowed public requests, denied private ones, one login.
  for (let minute = 0; minute < 5; minute++) {
    for (let i = 0; i <= minute; i++) await rawRequest(gatehouse.proxyUrl, '/public/x')
    await rawRequest(gatehouse.proxyUrl, '/private')
    await app.operations.sample()
    clock.advance(MINUTE)
  }
  const login = await context.newPage()
  await login.goto(`${gatehouse.proxyUrl}/_gatehouse/login?form=1&rd=/public/x`)
  await login.fill('#username', 'carol')
  await login.fill('#password', 'carol-local-password')
  await Promise.all([login.waitForURL(`${gatehouse.proxyUrl}/public/x`), login.click('button[type=submit]')])
  await login.close()
  await app.operations.sample()

  const page = await context.newPage()
  await page.goto(`${gatehouse.adminUrl}/status.html`)
  t.equal(await text(page, '#mode'), 'normal')
  t.equal(await read(page, async () => await page.title()), 'Gatehouse: normal')
  t.equal(await text(page, '#circuit-0'), 'closed')
  t.equal(await text(page, '#circuit-1'), 'closed')
  t.equal(await text(page, '#keycloak-reachable'), 'reachable · strategy priority')
  // 1+2+3+4+5 public requests, and what the browser was let through to after signing in.
  const allowed = cluster.upstream.requests.length
  t.ok(allowed >= 16)
  t.equal(await text(page, '#decisions-allow'), String(allowed), 'every request the app received was an allow')
  t.equal(await text(page, '#decisions-deny'), '5')
  t.equal(await text(page, '#logins-local'), '1', 'carol signed in locally (auth.primary local)')
  t.equal(await text(page, '#logins-failed'), '0')
  t.equal(await text(page, '#sessions-active'), '0 keycloak · 0 cached · 1 local')
  t.equal(await text(page, '#sync-oldest'), 'none waiting', 'not "oldest - s"')
  t.equal(await text(page, '#sync-pending'), '0')
  const report = await (await fetch(`${gatehouse.adminUrl}/status`)).json() as { policy: { version: string, rules: number, files: string[] } }
  t.match(report.policy, { version: /^sha256:[0-9a-f]{16}$/, rules: 1, files: ['app.yaml'] })
  t.match(await text(page, '#policy-version'), new RegExp(`^${report.policy.version} · 1 rule, 0 roles from app\\.yaml · loaded 2025-03-04 02:00:00 UTC`), 'the policy version, its rules and files, and when they were loaded')
  t.equal(await text(page, '#store'), 'sqlite · normal', 'the session store and its mode')
  t.equal(await text(page, '#alerts-none').catch(() => ''), '', 'alerts are off: no "none firing" claim')
  t.match(await text(page, '#alerts'), 'alerts are off')
  t.match(await text(page, '#jwks'), /^1 key \(.+\); fetched 2025-03-04 02:00:00 UTC/)
  const generated = await text(page, '#generated')
  t.match(generated, 'Rendered 2025-03-04 02:05:00 UTC', 'times in UTC')
  t.match(generated, 'Rendered 2025-03-04 02:05:00 UTC (0 s ago) · 2025-03-04 11:05:00 local (Asia/Tokyo)', 'and the reader\'s local time beside them')
  t.match(generated, 'reloads every 1 s')
  const strips = await read(page, async () => await page.$$eval('svg.strip', (svgs) => svgs.map((s) => s.getAttribute('data-summary'))))
  t.same(strips, ['closed 6 min', 'closed 6 min'], 'a circuit strip per server, one cell per minute recorded')
  const bars = await read(page, async () => await page.$$eval('svg.bars', (svgs) => svgs.map((s) => s.getAttribute('aria-label'))))
  t.same(bars, [
    `decisions per minute, last hour: allow ${allowed}, redirect 0, deny 5; busiest minute 6`,
    'successful logins per minute, last hour: keycloak 0, cached 0, local 1; busiest minute 1'
  ])
  t.equal(await read(page, async () => await page.evaluate('document.documentElement.scrollWidth')), 390, 'nothing wider than a phone screen: the page does not scroll sideways')
  t.same(await read(page, async () => await page.$$eval('[src], link[href]', (els) => els.map((e) => e.outerHTML))), [], 'no external asset (no src, no linked style sheet)')
  await screenshot(page, 'dashboard-phone-normal')

  // The first server refuses for a few minutes: its circuit opens, the other still answers.
  await cluster.servers[0]?.setMode('refuse')
  clock.advance(31_000)
  await app.keycloak.health.round()
  for (let minute = 0; minute < 3; minute++) { clock.advance(MINUTE); await app.operations.sample() }
  await nextRefresh(page)
  t.equal(await text(page, '#mode'), 'normal', 'one server still answers')
  // Three minutes on, its cooldown is over: a health round may be probing it as the page renders.
  t.match(await text(page, '#circuit-0'), /^(open|half-open \(probing\))$/, 'the refusing server is not shown closed')
  t.equal(await text(page, '#circuit-1'), 'closed')
  t.match(await text(page, '#servers'), 'refused')

  // Now the second: the mode changes, and the next page rendered shows it.
  await cluster.servers[1]?.setMode('refuse')
  clock.advance(31_000)
  await app.keycloak.health.round()
  t.equal(app.mode.mode, 'degraded')
  await nextRefresh(page)
  t.equal(await text(page, '#mode'), 'degraded', 'the mode change is on the first page rendered after it')
  t.equal(await read(page, async () => await page.title()), 'Gatehouse: degraded')
  t.equal(await text(page, '#circuit-1'), 'open')
  t.match(await text(page, '#keycloak-reachable'), /^unreachable/)
  t.match(await text(page, '#mode-since'), 'since 2025-03-04 02:09:02 UTC (0 s ago)')
  const after = await read(page, async () => await page.$$eval('svg.strip', (svgs) => svgs.map((s) => s.getAttribute('data-summary'))))
  // A minute shows the worst its circuit was in it: the first opened during 02:05.
  t.same(after, ['closed 5 min, open 5 min', 'closed 9 min, open 1 min'], 'the history shows when each circuit opened')
  await screenshot(page, 'dashboard-phone-degraded')
  await page.setViewportSize({ width: 1280, height: 900 })
  await page.reload()
  await screenshot(page, 'dashboard-desktop-degraded')
})
