import { join } from 'node:path'
import type { Test } from 'tap'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { runGatehouse } from '../fixtures/cli.ts'
import { manualClock, type ManualClock } from '../fixtures/clock.ts'
import { TEST_SECRETS, writeConfig } from '../fixtures/gatehouse.ts'
import { GATEHOUSE_CLIENT, type RealKeycloak } from '../fixtures/keycloak-real.ts'
import { addLocalUser, formLogin } from '../fixtures/sessions.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { openDatabase } from '../../src/store/db.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import { UsersRepository } from '../../src/store/users.ts'
import { gatehouseFor, realSettings } from './helpers.ts'

const ring = new KeyRing(TEST_SECRETS.encryption_keys)

/** Creates a realm user the way an administrator would (complete profile, a permanent password). */
async function createKeycloakUser (kc: RealKeycloak, username: string, password: string): Promise<string> {
  const res = await kc.admin('POST', '/users', {
    username, enabled: true, email: `${username}@example.test`, emailVerified: true, firstName: username, lastName: 'Test',
    credentials: [{ type: 'password', value: password, temporary: false }]
  })
  if (res.status !== 201 || res.location === null) throw new Error(`create ${username}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.location.slice(res.location.lastIndexOf('/') + 1)
}

/** Admin events Keycloak recorded for a resource path (the realm stores admin events: realm.json). */
async function adminEvents (kc: RealKeycloak, resourcePath: string, operation?: string): Promise<Array<Record<string, unknown>>> {
  const query = new URLSearchParams({ resourcePath, max: '1000', ...(operation !== undefined ? { operationTypes: operation } : {}) })
  return (await kc.admin('GET', `/admin-events?${query.toString()}`)).body as Array<Record<string, unknown>>
}

/** The first client-credentials grant and Admin API reads of a freshly started Keycloak. */
async function warmUp (kc: RealKeycloak, userId: string): Promise<void> {
  const grant = await kc.token(GATEHOUSE_CLIENT, { grant_type: 'client_credentials' })
  if (grant.status !== 200) throw new Error(`client credentials after the restart: ${grant.status}`)
  const user = await kc.admin('GET', `/users/${userId}`)
  if (user.status !== 200) throw new Error(`the user after the restart: ${user.status}`)
  // A password check loads the hashing code the reset-password call uses.
  const signIn = await kc.token(GATEHOUSE_CLIENT, { grant_type: 'password', username: 'carol', password: 'carol-password' })
  if (signIn.status !== 200) throw new Error(`carol's password grant after the restart: ${signIn.status}`)
}

/** Lets Gatehouse see Keycloak again: the cooldown passes on its clock, one health round closes the circuit. */
async function backOnline (clock: ManualClock, app: { keycloak: { health: { round: () => Promise<void> }, pool: { reachable: () => boolean } } }): Promise<void> {
  clock.advance(61_000)
  await app.keycloak.health.round()
  if (!app.keycloak.pool.reachable()) throw new Error('keycloak is still unreachable for Gatehouse')
}

/** The sync queue replaying to Keycloak's real Admin API with the realm's service account. */
export async function syncTests (t: Test, kc: RealKeycloak): Promise<void> {
  t.test('a password change made while Keycloak is stopped (SIGSTOP, then SIGKILL) reaches it exactly once after a restart', async (t) => {
    const carolId = await createKeycloakUser(kc, 'carol', 'carol-password')
    const clock = manualClock()
    const { gatehouse } = await gatehouseFor(t, kc, {
      clock,
      settings: (base) => ({ ...base, keycloak: { ...(base.keycloak as object), timeout_ms: 1000 }, auth: { primary: 'local' }, sync: { enabled: false } })
    })
    await addLocalUser(gatehouse.db, 'carol', 'carol-password')
    const browser = new BrowserClient()
    t.equal((await formLogin(browser, gatehouse.proxyUrl, 'carol', 'carol-password')).status, 200)
    const queue = new SyncQueueRepository(gatehouse.db, ring)

    kc.pause()
    let paused = true
    t.teardown(() => { if (paused) kc.resume() })
    const changed = await browser.submit(await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password`), { current: 'carol-password', new: 'brand-new-secret-password', confirm: 'brand-new-secret-password' })
    t.equal(changed.status, 200, 'the change is accepted while Keycloak does not answer')
    t.match(await gatehouse.app.sync.worker.cycle(), { done: 0 }, 'a replay into the black hole does not finish')
    t.match(queue.list('pending'), [{ operation: 'password_change', username: 'carol' }])

    await kc.kill()
    paused = false
    t.match(await gatehouse.app.sync.worker.cycle(), { done: 0 }, 'nor does one against a refused port')
    t.equal(queue.list('pending').length, 1, 'the change is still queued')

    await kc.start()
    t.comment(`Keycloak restarted in ${(kc.startedInMs / 1000).toFixed(1)} s`)
    // The 1 s deadline above keeps the black-hole waits short; a JVM that has just started can
    // take longer than that over its first grant and Admin API calls (CI saw it), so they are
    // made once here before Gatehouse's replay is judged.
    await warmUp(kc, carolId)
    await backOnline(clock, gatehouse.app)
    const replay = await gatehouse.app.sync.worker.cycle()
    t.match(replay, { done: 1, failed: 0 }, `the replay lands (last error: ${queue.list().at(-1)?.lastError ?? 'none'})`)
    t.same(queue.list().map((i) => [i.operation, i.status, i.hasSecret]), [['password_change', 'done', false]], 'done, and the queued password erased')
    t.match(await gatehouse.app.sync.worker.cycle(), { done: 0 }, 'a second cycle replays nothing')

    t.equal((await adminEvents(kc, `users/${carolId}/reset-password`)).length, 1, 'Keycloak reset the password exactly once')
    const grant = await kc.token(GATEHOUSE_CLIENT, { grant_type: 'password', username: 'carol', password: 'brand-new-secret-password' })
    t.equal(grant.status, 200, 'the new password works with the password grant')
    const old = await kc.token(GATEHOUSE_CLIENT, { grant_type: 'password', username: 'carol', password: 'carol-password' })
    t.same([old.status, old.body], [400, { error: 'invalid_grant', error_description: 'Invalid user credentials' }], 'the old one does not')
  })

  t.test('user create, update, group membership and disable replay against the Admin API', async (t) => {
    const { gatehouse } = await gatehouseFor(t, kc, { settings: (base) => ({ ...base, sync: { enabled: false } }) })
    const queue = new SyncQueueRepository(gatehouse.db, ring)
    queue.enqueue({ username: 'dave', operation: 'user_create', payload: { email: 'dave@example.test', first_name: 'Dave', last_name: 'Test' }, secret: { password: 'dave-password' } }, Date.now())
    t.match(await gatehouse.app.sync.worker.cycle(), { done: 1, failed: 0 })
    const dave = await kc.user('dave')
    t.match(dave, { username: 'dave', email: 'dave@example.test', firstName: 'Dave', lastName: 'Test', enabled: true })
    t.equal((await kc.token(GATEHOUSE_CLIENT, { grant_type: 'password', username: 'dave', password: 'dave-password' })).status, 200, 'dave signs in with the password Gatehouse provisioned')

    queue.enqueue({ username: 'dave', operation: 'user_update', payload: { email: 'david@example.test', first_name: 'David' } }, Date.now())
    queue.enqueue({ username: 'dave', operation: 'group_membership', payload: { group: '/staff/admins', action: 'add' } }, Date.now())
    t.match(await gatehouse.app.sync.worker.cycle(), { done: 2, failed: 0 })
    t.match(await kc.user('dave'), { email: 'david@example.test', firstName: 'David', lastName: 'Test' })
    t.same(((await kc.admin('GET', `/users/${dave?.id as string}/groups`)).body as Array<{ path: string }>).map((g) => g.path), ['/staff/admins'])

    queue.enqueue({ username: 'dave', operation: 'group_membership', payload: { group: '/staff/admins', action: 'remove' } }, Date.now())
    queue.enqueue({ username: 'dave', operation: 'user_disable', payload: {} }, Date.now())
    t.match(await gatehouse.app.sync.worker.cycle(), { done: 2, failed: 0 })
    t.same((await kc.admin('GET', `/users/${dave?.id as string}/groups`)).body, [])
    t.match(await kc.user('dave'), { enabled: false })
    const refused = await kc.token(GATEHOUSE_CLIENT, { grant_type: 'password', username: 'dave', password: 'dave-password' })
    t.same([refused.status, refused.body], [400, { error: 'invalid_grant', error_description: 'Account disabled' }])

    queue.enqueue({ username: 'dave', operation: 'user_create', payload: { email: 'david@example.test' } }, Date.now())
    t.match(await gatehouse.app.sync.worker.cycle(), { done: 1, failed: 0 }, 'creating an existing user links it (409 resolved)')
    t.match(queue.list().at(-1), { status: 'done', payload: { keycloak_id: dave?.id, linked: true } })
  })

  t.test('users migrate-to-keycloak provisions the local users once; a second run creates nothing', async (t) => {
    const dir = t.testdir()
    writeConfig(dir, { ...realSettings(kc, 'http://127.0.0.1:9'), sync: { enabled: false } })
    const { db } = openDatabase({ path: join(dir, 'gatehouse.db') })
    t.teardown(() => db.close())
    for (const u of ['nora', 'omar', 'bob']) await addLocalUser(db, u, `${u}-local-password`)
    const cli = async (...args: string[]) => await runGatehouse(['users', 'migrate-to-keycloak', '-c', join(dir, 'config.yaml'), ...args])

    const dry = await cli('--dry-run', '--json')
    t.equal(dry.code, 0, dry.stderr)
    t.match(JSON.parse(dry.stdout), { dryRun: true, counts: { would_create: 2, would_link: 1 } })
    t.equal(await kc.user('nora'), undefined, 'a dry run creates nothing')

    const run = await cli('--json')
    t.equal(run.code, 0, run.stderr)
    t.match(JSON.parse(run.stdout), { selected: 3, counts: { created: 2, linked: 1 } })
    const nora = await kc.user('nora')
    t.match(nora, { username: 'nora', email: 'nora@local.test', enabled: true })
    const users = new UsersRepository(db)
    t.equal(users.find('nora')?.keycloakId, nora?.id)
    t.equal(users.find('bob')?.keycloakId, (await kc.user('bob'))?.id, 'bob was linked to his existing Keycloak account')
    const creates = (await adminEvents(kc, 'users/*', 'CREATE')).length

    const again = await cli('--json')
    t.equal(again.code, 0, again.stderr)
    t.match(JSON.parse(again.stdout), { selected: 3, counts: { already_linked: 3 } })
    t.equal((await adminEvents(kc, 'users/*', 'CREATE')).length, creates, 'the second run created nothing')
    t.equal(((await kc.admin('GET', '/users?username=nora&exact=true')).body as unknown[]).length, 1, 'one nora in Keycloak')
  })
}
