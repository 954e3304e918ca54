import type { Test } from 'tap'
import { chmodSync } from 'node:fs'
import { join } from 'node:path'
import { writeConfig } from '../fixtures/gatehouse.ts'
import { runInProcess } from '../fixtures/cli.ts'
import type { RealKeycloak } from '../fixtures/keycloak-real.ts'
import type { CheckResult } from '../../src/doctor/checks.ts'
import { realSettings } from './helpers.ts'

async function diagnose (dir: string): Promise<{ code: number | null, checks: CheckResult[] }> {
  const result = await runInProcess(['doctor', 'diagnose', '--json', '-c', join(dir, 'config.yaml')])
  return { code: result.code, checks: (JSON.parse(result.stdout) as { checks: CheckResult[] }).checks }
}

/** `gatehouse doctor` against Keycloak itself: all well, then a wrong client secret. */
export async function doctorTests (t: Test, kc: RealKeycloak): Promise<void> {
  t.test('doctor diagnose passes every Keycloak check when all is well', async (t) => {
    const dir = t.testdir()
    writeConfig(dir, realSettings(kc, 'http://127.0.0.1:9'))
    // The test config holds its secrets inline: private to its owner, as such a file must be.
    chmodSync(join(dir, 'config.yaml'), 0o600)
    const { code, checks } = await diagnose(dir)
    t.same(checks.filter((c) => c.status === 'fail'), [], 'nothing failed')
    t.equal(code, 0)
    const byName = (prefix: string): CheckResult | undefined => checks.find((c) => c.name.startsWith(prefix))
    t.match(byName(`keycloak ${kc.baseUrl}`), { status: 'pass', detail: /^reachable: discovery answered in \d+ ms$/ })
    t.match(byName('issuer'), { status: 'pass', detail: `discovery names ${kc.issuer}, as keycloak.issuer does` })
    t.match(byName('clock'), { status: 'pass', detail: /^this host's clock is (in step with Keycloak's|\d s (ahead of|behind) Keycloak's) \(by the iat of a token it issued \(it sends no Date header\)/ }, 'Keycloak 26 sends no Date header: the skew is read from its token\'s iat')
    t.match(byName('client credentials'), { status: 'pass', detail: 'Keycloak accepts client gatehouse\'s credentials (client_secret_basic)' })
    t.match(byName('admin api'), { status: 'pass' }, 'the service account reads users through the Admin API')
    t.match(byName('jwks'), { status: 'pass', detail: /fetched now/ })
  })

  t.test('doctor diagnose names a wrong client secret, with its fix', async (t) => {
    const dir = t.testdir()
    const settings = realSettings(kc, 'http://127.0.0.1:9')
    writeConfig(dir, { ...settings, keycloak: { ...(settings.keycloak as Record<string, unknown>), client_secret: 'not-the-secret' } })
    const { code, checks } = await diagnose(dir)
    t.equal(code, 1)
    const client = checks.find((c) => c.name === 'client credentials')
    t.equal(client?.status, 'fail')
    t.match(client?.detail, /^Keycloak refuses client gatehouse's credentials \((unauthorized_client|invalid_client)\)/, 'Keycloak 26 answers 401 unauthorized_client for a wrong secret')
    t.match(client?.fix, 'set keycloak.client_secret to client gatehouse\'s secret (Keycloak admin console: Clients → gatehouse → Credentials)')
    t.equal(checks.find((c) => c.name.startsWith('keycloak '))?.status, 'pass', 'the server itself answers')
  })

  t.test('doctor test-auth: Keycloak accepts alice\'s password', async (t) => {
    const dir = t.testdir()
    writeConfig(dir, realSettings(kc, 'http://127.0.0.1:9'))
    const result = await runInProcess(['doctor', 'test-auth', 'alice', '-c', join(dir, 'config.yaml')], { input: 'alice-password\n' })
    t.equal(result.code, 0, result.stderr)
    t.match(result.stdout, /^keycloak: yes\n {2}reachable\n {2}user [0-9a-f-]+ in realm test: enabled yes/m)
    t.match(result.stdout, 'Keycloak accepts the password given (password grant)')
    t.match(result.stdout, /^login now: yes, decided by Keycloak \(auth\.primary keycloak\)$/m)
  })
}
