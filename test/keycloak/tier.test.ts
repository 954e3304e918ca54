/**
 * The real-Keycloak tier: every test in test/keycloak/ against one Keycloak 26 (the version
 * pinned in scripts/keycloak.sh) started once for the whole tier.
 *
 * Why one file: tap runs test files in parallel processes, and a Keycloak start costs 20–40 s
 * of a 2-core machine. One file that starts it once and runs the groups (test/keycloak/*.ts)
 * one after another serves the whole tier with a single start, keeps the groups that stop,
 * kill or re-key Keycloak from disturbing the others, and costs the rest of `npm test`
 * nothing: tap's `before`/`after` scripts would run for every tap invocation (a single unit
 * test too), and a lock file shared between processes would need a last-one-out stop that a
 * crashed process never performs. Keycloak is stopped in this file's teardown, which tap runs
 * whether the tests passed or not; the fixture also kills it when the process exits or is
 * signalled (tap's timeout).
 *
 * Run it alone with `npx tap test/keycloak/tier.test.ts`; one group with `--grep`, e.g.
 * `npx tap test/keycloak/tier.test.ts --grep=bearer`.
 */
import t from 'tap'
import { keycloakTierAvailable, keycloakVersion, startRealKeycloak } from '../fixtures/keycloak-real.ts'
import { smokeTests } from './smoke.ts'
import { bearerTests } from './bearer.ts'
import { browserTests } from './browser.ts'
import { refreshTests } from './refresh.ts'
import { logoutTests } from './logout.ts'
import { syncTests } from './sync.ts'
import { keyTests } from './keys.ts'
import { outageTests } from './outage.ts'
import { doctorTests } from './doctor.ts'

// The whole tier in one file takes a few minutes; tap's per-file default (package.json) is 120 s.
t.setTimeout(15 * 60 * 1000)

if (keycloakTierAvailable(t)) {
  const kc = await startRealKeycloak()
  t.teardown(() => kc.close())
  t.comment(`Keycloak ${keycloakVersion()} ready in ${(kc.startedInMs / 1000).toFixed(1)} s at ${kc.baseUrl} (JVM pid ${kc.javaPid})`)

  await t.test('smoke: the imported realm, as Gatehouse needs it', (t) => smokeTests(t, kc))
  await t.test('bearer tokens', (t) => bearerTests(t, kc))
  await t.test('browser code flow', (t) => browserTests(t, kc))
  await t.test('refresh with rotation', (t) => refreshTests(t, kc))
  await t.test('logout', (t) => logoutTests(t, kc))
  await t.test('sync queue against the Admin API', (t) => syncTests(t, kc))
  await t.test('key rotation', (t) => keyTests(t, kc))
  await t.test('doctor', (t) => doctorTests(t, kc))
  await t.test('outage under load', (t) => outageTests(t, kc))
}
