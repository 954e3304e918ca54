import t from 'tap'
import { startCluster } from '../fixtures/cluster.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'

t.test('SSO: a browser is sent to Keycloak, logs in, and the app receives the identity', async (t) => {
  const cluster = await startCluster(t, 1)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings()))
  await gatehouse.started
  const browser = new BrowserClient()

  const first = await browser.get(`${gatehouse.proxyUrl}/hello?x=1`, { follow: false })
  t.equal(first.status, 302, 'a page load without a session is redirected')
  t.equal(first.headers.location, '/_gatehouse/login?rd=%2Fhello%3Fx%3D1')

  const loginPage = await browser.get(new URL(first.headers.location as string, gatehouse.proxyUrl).href)
  t.equal(loginPage.status, 200)
  t.ok(loginPage.chain.some((u) => u.startsWith(cluster.standin.issuer)), 'the browser went to the public authorization endpoint')
  const auth = new URL(loginPage.chain.find((u) => u.includes('/protocol/openid-connect/auth')) as string)
  t.equal(auth.searchParams.get('code_challenge_method'), 'S256')
  t.ok(auth.searchParams.get('state'))
  t.ok(auth.searchParams.get('nonce'))
  t.equal(auth.searchParams.get('redirect_uri'), `${gatehouse.proxyUrl}/_gatehouse/callback`)

  const done = await browser.submit(loginPage, { username: 'alice', password: 'alice-password' })
  t.equal(done.status, 200, `ended on the app: ${done.chain.join(' -> ')}`)
  t.equal(new URL(done.url).pathname + new URL(done.url).search, '/hello?x=1', 'back where the person started')
  const seen = cluster.upstream.requests.at(-1)
  t.equal(seen?.headers['x-auth-request-mode'], 'keycloak')
  t.equal(seen?.headers['x-auth-request-user'], cluster.standin.user('alice').sub)
  t.equal(seen?.headers['x-auth-request-preferred-username'], 'alice')
  t.match(seen?.headers['x-auth-request-roles'], /admin/)
  const session = browser.cookie(gatehouse.proxyUrl, 'gatehouse_session')
  t.ok(session?.httpOnly, 'the session cookie is HttpOnly')
  t.equal(session?.sameSite, 'lax')
  t.notOk(browser.cookie(gatehouse.proxyUrl, 'gatehouse_login'), 'the login transaction cookie is gone')

  const info = await fetch(`${gatehouse.proxyUrl}/_gatehouse/userinfo`, { headers: { cookie: `gatehouse_session=${session?.value ?? ''}` } })
  t.equal(info.status, 200)
  t.match(await info.json(), { preferred_username: 'alice', auth_mode: 'keycloak', email: 'alice@example.test' })
})
