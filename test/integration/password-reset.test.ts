import t, { type Test } from 'tap'
import { startCluster } from '../fixtures/cluster.ts'
import { manualClock } from '../fixtures/clock.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { startMailServer, type MailServer } from '../fixtures/mail.ts'
import { BrowserClient, type BrowserResponse } from '../fixtures/browser-client.ts'
import { addLocalUser, formLogin, freePort } from '../fixtures/sessions.ts'
import { DEFAULT_USERS } from '../fixtures/keycloak-standin.ts'
import { AuditLogRepository } from '../../src/store/audit-log.ts'
import { KeyRing } from '../../src/store/crypto.ts'
import { SyncQueueRepository } from '../../src/store/sync-queue.ts'
import { TEST_SECRETS } from '../fixtures/gatehouse.ts'

const NEW_PASSWORD = 'a-brand-new-pass'

/** A Keycloak stand-in that knows carol too, Gatehouse (auth.primary local) with password reset, and an SMTP server. */
async function setUp (t: Test, settings: Record<string, unknown> = {}) {
  const cluster = await startCluster(t, 1, { users: [...DEFAULT_USERS, { username: 'carol', password: 'carol-old-password', email: 'carol@example.test' }] })
  const mail = await startMailServer(t)
  const port = await freePort()
  const publicUrl = `http://127.0.0.1:${port}`
  const clock = manualClock()
  const base = cluster.settings()
  const config = writeConfig(t.testdir(), {
    ...base,
    server: { host: '127.0.0.1', port, public_url: publicUrl },
    auth: { primary: 'local' },
    smtp: mail.settings(),
    password_reset: { enabled: true },
    ...settings
  })
  const gatehouse = await startGatehouse(t, config, { clock })
  await gatehouse.started
  await addLocalUser(gatehouse.db, 'carol', 'carol-old-password', ['editor'])
  return { cluster, mail, gatehouse, clock, publicUrl }
}

/** Asks for a link on the form, as a browser would. */
async function ask (browser: BrowserClient, proxyUrl: string, identifier: string): Promise<BrowserResponse> {
  const form = await browser.get(`${proxyUrl}/_gatehouse/password-reset`)
  if (form.status !== 200) throw new Error(`reset form answered ${form.status}`)
  return await browser.submit(form, { identifier })
}

function linkIn (mail: MailServer, index: number): string {
  const match = /^(http:\/\/\S+\/_gatehouse\/password-reset\/confirm\?token=[A-Za-z0-9_-]{43})$/m.exec(mail.messages[index]?.text ?? '')
  if (match === null) throw new Error(`no link in ${mail.messages[index]?.text ?? '(no message)'}`)
  return match[1] as string
}

// The nonce and the CSRF token differ on every page; everything else must be the same.
const comparable = (page: BrowserResponse): string => page.body.replace(/nonce="[^"]+"/g, 'nonce="N"').replace(/name="csrf" value="[^"]+"/g, 'name="csrf" value="C"')

t.test('reset by e-mail: the link works once, sets the local hash, ends the sessions, and queues the password for Keycloak', async (t) => {
  const { cluster, mail, gatehouse, publicUrl } = await setUp(t)
  const proxyUrl = gatehouse.proxyUrl
  const signedIn = new BrowserClient()
  t.equal((await formLogin(signedIn, proxyUrl, 'carol', 'carol-old-password')).status, 200, 'carol has a session on her old password')

  const browser = new BrowserClient()
  const login = await browser.get(`${proxyUrl}/_gatehouse/login?form=1`)
  t.match(login.body, '<a href="/_gatehouse/password-reset">Forgot your password?</a>')
  const answer = await ask(browser, proxyUrl, 'carol')
  t.equal(answer.status, 200)
  t.match(answer.body, 'a link to do so is on its way to the address on file')
  t.equal(answer.headers['referrer-policy'], 'no-referrer')
  await mail.waitFor(1)
  const message = mail.messages[0]
  t.same(message?.to, ['carol@local.test'], 'to the address Gatehouse has for her')
  t.equal(message?.subject, 'Reset your password')
  const link = linkIn(mail, 0)
  t.ok(link.startsWith(`${publicUrl}/_gatehouse/password-reset/confirm?token=`), 'built from server.public_url, never from the request\'s Host')
  t.match(message?.text, 'within 30 minutes. It works once')

  const form = await browser.get(link)
  t.equal(form.status, 200)
  t.match(form.body, 'Choose a new password')
  t.equal((await browser.get(link)).status, 200, 'opening the link again (a mail scanner did first) uses nothing up')
  const mismatch = await browser.submit(form, { new: NEW_PASSWORD, confirm: 'something-else-entirely' })
  t.equal(mismatch.status, 400)
  t.match(mismatch.body, 'The new passwords do not match.')
  const short = await browser.submit(form, { new: 'short', confirm: 'short' })
  t.equal(short.status, 400)
  t.match(short.body, 'at least 12 characters')
  const done = await browser.submit(form, { new: NEW_PASSWORD, confirm: NEW_PASSWORD })
  t.equal(done.status, 200)
  t.match(done.body, 'Your new password is set (single sign-on takes it as soon as it is reachable), and every session of your account has ended.')

  t.equal((await browser.get(link)).status, 400, 'the link works once')
  const again = await browser.submit(form, { new: 'carol-third-password-x', confirm: 'carol-third-password-x' })
  t.equal(again.status, 400)
  t.match(again.body, 'This reset link has expired or was already used.')

  const stale = await signedIn.get(`${proxyUrl}/hello`, { follow: false })
  t.equal(stale.status, 302, 'the session on the old password is over')
  t.equal((await formLogin(new BrowserClient(), proxyUrl, 'carol', 'carol-old-password', '/hello', false)).status, 401, 'the old password no longer works')
  t.equal((await formLogin(new BrowserClient(), proxyUrl, 'carol', NEW_PASSWORD)).status, 200, 'the new one does')

  const queue = new SyncQueueRepository(gatehouse.db, new KeyRing(TEST_SECRETS.encryption_keys))
  await gatehouse.app.sync.worker.cycle()
  t.match(queue.list().map((i) => [i.username, i.operation, i.status]), [['carol', 'password_change', 'done']], 'queued for Keycloak and replayed')
  t.equal(typeof (await cluster.standin.passwordGrant('carol', NEW_PASSWORD)).access_token, 'string', 'Keycloak has the new password')
  const audit = new AuditLogRepository(gatehouse.db).since(0).filter((e) => e.action.startsWith('password_reset'))
  t.match(audit, [{ actor: 'carol', action: 'password_reset_requested', result: 'success' }, { actor: 'carol', action: 'password_reset', result: 'success', detail: { keycloak: 'queued', sessions_ended: 1 } }])

  const token = new URL(link).searchParams.get('token') as string
  t.notMatch(gatehouse.log.text(), token, 'the token is never logged')
  t.notMatch(gatehouse.log.text(), 'password-reset/confirm?token', 'nor the link')
  t.notMatch(JSON.stringify(audit), token)
})

t.test('a link expires; a newer request withdraws the older link', async (t) => {
  const { mail, gatehouse, clock } = await setUp(t)
  const browser = new BrowserClient()
  await ask(browser, gatehouse.proxyUrl, 'carol')
  await mail.waitFor(1)
  clock.advance(30 * 60_000 + 1000)
  const expired = await browser.get(linkIn(mail, 0))
  t.equal(expired.status, 400)
  t.match(expired.body, 'This reset link has expired or was already used.')

  await ask(browser, gatehouse.proxyUrl, 'carol@local.test')
  await ask(browser, gatehouse.proxyUrl, 'CAROL')
  await mail.waitFor(3)
  t.equal((await browser.get(linkIn(mail, 1))).status, 400, 'by address, then by name: the first of the two links was withdrawn')
  t.equal((await browser.get(linkIn(mail, 2))).status, 200, 'the latest works')
})

t.test('the request form answers the same, and takes the same path, whether or not the user exists; the answer never waits for e-mail', async (t) => {
  t.setTimeout(30_000)
  const { mail, gatehouse } = await setUp(t)
  const browser = new BrowserClient()
  mail.hold()
  // With DATA held, a response that waited for the SMTP server would never come.
  const known = await ask(browser, gatehouse.proxyUrl, 'carol')
  await mail.waitForHeld()
  t.equal(mail.messages.length, 0, 'answered while the message was still being sent')
  const unknown = await ask(browser, gatehouse.proxyUrl, 'nobody-at-all')
  const noMail = await ask(browser, gatehouse.proxyUrl, 'alice')
  mail.release()
  await mail.waitFor(1)
  for (const other of [unknown, noMail]) {
    t.equal(other.status, known.status)
    t.equal(comparable(other), comparable(known), 'the same page')
    t.same(Object.keys(other.headers).sort(), Object.keys(known.headers).sort(), 'the same headers')
  }
  t.equal(mail.messages.length, 1, 'one message: only carol is a local user with an address')
  const requests = new AuditLogRepository(gatehouse.db).since(0, 'password_reset_requested')
  t.match(requests.map((r) => [r.actor, r.result, r.reason]), [['carol', 'success', null], [null, 'failure', 'no_local_user_with_email'], [null, 'failure', 'no_local_user_with_email']], 'each request is audited the same way')
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /^gatehouse_password_resets_total\{result="requested"\} 3$/m, 'every request counts alike')
})

t.test('rate limits: per user name or address, and per client address; the 429 is the same for any name', async (t) => {
  const { mail, gatehouse } = await setUp(t)
  const browser = new BrowserClient()
  for (let i = 0; i < 3; i++) t.equal((await ask(browser, gatehouse.proxyUrl, 'carol')).status, 200)
  const limited = await ask(browser, gatehouse.proxyUrl, 'carol')
  t.equal(limited.status, 429)
  t.equal(limited.headers['retry-after'], '3600')
  t.match(limited.body, 'Too many reset requests')
  for (let i = 0; i < 3; i++) await ask(browser, gatehouse.proxyUrl, 'nobody')
  t.equal((await ask(browser, gatehouse.proxyUrl, 'nobody')).status, 429, 'the same for a name with no account')
  t.equal((await ask(browser, gatehouse.proxyUrl, 'carol@local.test')).status, 200, 'carol by address: a new identifier, answered as usual...')
  await mail.waitFor(3)
  t.equal(mail.messages.length, 3, '...but no fourth link is sent to carol within the hour')
  for (const name of ['d1', 'd2', 'd3']) await ask(browser, gatehouse.proxyUrl, name)
  t.equal((await ask(browser, gatehouse.proxyUrl, 'someone-else')).status, 429, 'the eleventh request from one address within the hour')
})

t.test('only local users: a Keycloak user of a keycloak-primary deployment gets no link; a break-glass user does, and nothing is queued', async (t) => {
  const { mail, gatehouse } = await setUp(t, { auth: { primary: 'keycloak' } })
  const browser = new BrowserClient()
  // alice logs in through Keycloak once: a cached credential (source keycloak) with her address.
  t.equal((await formLogin(browser, gatehouse.proxyUrl, 'alice', 'alice-password')).status, 200)
  await ask(browser, gatehouse.proxyUrl, 'alice')
  await ask(browser, gatehouse.proxyUrl, 'carol')
  await mail.waitFor(1)
  t.same(mail.messages.map((m) => m.to), [['carol@local.test']], 'the break-glass user only')
  const form = await browser.get(linkIn(mail, 0))
  const done = await browser.submit(form, { new: NEW_PASSWORD, confirm: NEW_PASSWORD })
  t.equal(done.status, 200)
  t.notMatch(done.body, 'single sign-on takes it', 'a break-glass user has no Keycloak account to update')
  t.same(new SyncQueueRepository(gatehouse.db, new KeyRing(TEST_SECRETS.encryption_keys)).list(), [])
})

t.test('password_reset.enabled false: no routes, no link on the login form; enabling it without public_url is a config error', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' } }))
  await gatehouse.started
  const browser = new BrowserClient()
  t.equal((await browser.get(`${gatehouse.proxyUrl}/_gatehouse/password-reset`)).status, 404)
  t.notMatch((await browser.get(`${gatehouse.proxyUrl}/_gatehouse/login?form=1`)).body, 'Forgot your password')
  t.throws(() => writeConfig(t.testdir(), { ...cluster.settings(), password_reset: { enabled: true } }), {
    code: 'ERR_CONFIG_INVALID',
    message: /smtp\.host: expected an SMTP server when password_reset\.enabled is true, received nothing[\s\S]*server\.public_url: expected the public URL of the app when password_reset\.enabled is true/
  })
})
