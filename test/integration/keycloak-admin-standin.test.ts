// The stand-in's Admin REST API, driven only through the official @keycloak/keycloak-admin-client,
// as Gatehouse drives Keycloak's. The stand-in's own helpers (passwordGrant, tokenRequest,
// adminCalls…) are used to look at the results, never to make the admin calls.
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import KcAdminClient, { NetworkError } from '@keycloak/keycloak-admin-client'
import { decodeJwt } from 'jose'
import t from 'tap'
import {
  DEFAULT_ADMIN_ROLES, DEFAULT_CLIENT_SECRET, TokenRequestError, generateSigningKey, standinFor
} from '../fixtures/keycloak-standin.ts'
import type { KeycloakStandin, StandinClient } from '../fixtures/keycloak-standin.ts'

type Test = Pick<typeof t, 'teardown'>

const standin = standinFor

/** An admin client authenticated as a client's service account, as Gatehouse authenticates. */
async function adminOf (kc: KeycloakStandin, clientId = kc.clientId, clientSecret = kc.clientSecret): Promise<KcAdminClient> {
  const admin = new KcAdminClient({ baseUrl: kc.baseUrl, realmName: kc.realm })
  await admin.auth({ grantType: 'client_credentials', clientId, clientSecret })
  return admin
}

/** An admin client that presents `token` as is (no expiry check or refresh on the client side). */
function adminWithToken (kc: KeycloakStandin, token: string): KcAdminClient {
  const admin = new KcAdminClient({ baseUrl: kc.baseUrl, realmName: kc.realm })
  admin.registerTokenProvider({ getAccessToken: async () => token })
  return admin
}

/** The HTTP status and parsed body of an admin call the client rejected. */
async function refusal (call: Promise<unknown>): Promise<{ status: number, body: unknown, message: string }> {
  try {
    await call
  } catch (err) {
    if (err instanceof NetworkError) return { status: err.response.status, body: err.responseData, message: err.message }
    throw err
  }
  throw new Error('the admin call succeeded')
}

async function passwordGrantError (kc: KeycloakStandin, username: string, password: string): Promise<TokenRequestError> {
  try {
    await kc.passwordGrant(username, password)
  } catch (err) {
    if (err instanceof TokenRequestError) return err
    throw err
  }
  throw new Error('the password grant succeeded')
}

/** The `gatehouse` client as by default, plus a back-channel logout URL. */
function gatehouseWith (extra: Partial<StandinClient>): StandinClient {
  return {
    clientId: 'gatehouse',
    secret: DEFAULT_CLIENT_SECRET,
    serviceAccount: { clientRoles: { 'realm-management': [...DEFAULT_ADMIN_ROLES] } },
    ...extra
  }
}

/** A client's back-channel logout endpoint: records each POSTed form and answers 200. */
async function startLogoutReceiver (t: Test): Promise<{ url: string, received: URLSearchParams[] }> {
  const received: URLSearchParams[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => { body += chunk })
    req.on('end', () => {
      received.push(new URLSearchParams(body))
      res.writeHead(200).end()
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/backchannel-logout`, received }
}

/**
 * The browser code flow, reduced to fetch and a cookie jar: authorize → login form → resume →
 * callback, then the code exchanged at the token endpoint. Resolves with the access token.
 */
async function loginWithBrowser (kc: KeycloakStandin, username: string, password: string): Promise<string> {
  const jar = new Map<string, string>()
  const go = async (url: string, form?: Record<string, string>): Promise<Response> => {
    const headers: Record<string, string> = { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') }
    if (form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
    const response = await fetch(url, {
      method: form === undefined ? 'GET' : 'POST', headers, redirect: 'manual', ...(form !== undefined ? { body: new URLSearchParams(form) } : {})
    })
    for (const cookie of response.headers.getSetCookie()) {
      const [pair = ''] = cookie.split(';')
      const eq = pair.indexOf('=')
      jar.set(pair.slice(0, eq), pair.slice(eq + 1))
    }
    return response
  }
  const next = (response: Response, base: string): string => new URL(response.headers.get('location') ?? '', base).href
  const redirectUri = 'http://127.0.0.1:9/callback'
  const authorize = `${kc.endpoints.authorization}?${new URLSearchParams({ response_type: 'code', client_id: kc.clientId, redirect_uri: redirectUri, scope: 'openid' })}`
  const loginUrl = next(await go(authorize), authorize)
  const page = await (await go(loginUrl)).text()
  const action = new URL(/<form id="kc-form-login" action="([^"]+)"/.exec(page)?.[1] ?? '', loginUrl).href
  const afterLogin = await go(action, { username, password })
  if (afterLogin.status === 200) throw new Error(`login refused: ${/id="input-error"[^>]*>([^<]*)</.exec(await afterLogin.text())?.[1]}`)
  const callback = new URL(next(await go(next(afterLogin, action)), action))
  const tokens = await kc.tokenRequest({ grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: redirectUri })
  return String(tokens.body['access_token'])
}

t.test('the default service account holds the user-administration roles of realm-management', async (t) => {
  const kc = await standin(t)

  const result = await kc.tokenRequest({ grant_type: 'client_credentials' })
  const claims = decodeJwt(String(result.body['access_token']))

  const access = claims['resource_access'] as Record<string, { roles: string[] }>
  t.same(access['realm-management']?.roles.sort(), ['manage-users', 'query-groups', 'query-users', 'view-users'])
})

t.test('create answers 201 with the new id, and the user logs in with the password grant and the browser', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)

  const { id } = await admin.users.create({
    username: 'Carol',
    email: 'Carol@Example.test',
    firstName: 'Carol',
    lastName: 'Created',
    enabled: true,
    emailVerified: true,
    attributes: { team: ['blue'] },
    groups: ['/staff'],
    credentials: [{ type: 'password', value: 'carol-password', temporary: false }]
  })

  t.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  t.same(kc.adminCalls(), [{ method: 'POST', path: '/users', status: 201 }])
  t.match(kc.userById(id), { username: 'carol', email: 'carol@example.test', enabled: true, groups: ['/staff'] })
  t.match(await admin.users.findOne({ id }), {
    id, username: 'carol', email: 'carol@example.test', emailVerified: true, enabled: true, attributes: { team: ['blue'] }, requiredActions: []
  })
  const tokens = await kc.passwordGrant('carol', 'carol-password')
  t.match(decodeJwt(tokens.access_token), { sub: id, preferred_username: 'carol', email: 'carol@example.test', groups: ['/staff'] })
  t.match(decodeJwt(await loginWithBrowser(kc, 'carol', 'carol-password')), { sub: id, preferred_username: 'carol' })
  t.same(kc.serverErrors(), [])
})

t.test('a user created without enabled: true is disabled, as in Keycloak', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)

  const { id } = await admin.users.create({ username: 'dora', credentials: [{ type: 'password', value: 'dora-password' }] })
  const refused = await passwordGrantError(kc, 'dora', 'dora-password')

  t.equal(kc.userById(id)?.enabled, false)
  t.equal(refused.status, 400)
  t.same(refused.body, { error: 'invalid_grant', error_description: 'Account disabled' })
})

t.test('duplicates are 409 with Keycloak\'s errorMessage; a missing username is 400', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)

  const sameName = await refusal(admin.users.create({ username: 'ALICE', enabled: true }))
  const sameEmail = await refusal(admin.users.create({ username: 'alice2', email: 'Bob@example.test' }))
  const noName = await refusal(admin.users.create({ email: 'nobody@example.test' }))

  t.match(sameName, { status: 409, body: { errorMessage: 'User exists with same username' }, message: 'User exists with same username' })
  t.match(sameEmail, { status: 409, body: { errorMessage: 'User exists with same email' } })
  t.match(noName, { status: 400, body: { errorMessage: 'User name is missing' } })
  t.equal(kc.users.length, 2, 'nothing was created')
  t.same(kc.adminCalls().map((c) => c.status), [409, 409, 400])
})

t.test('creating a user in a group that does not exist is Keycloak\'s 500, and nothing is created', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)

  const result = await refusal(admin.users.create({ username: 'erin', enabled: true, groups: ['/nowhere'] }))

  t.match(result, { status: 500, body: { error: 'unknown_error' } })
  t.equal(kc.users.length, 2)
  t.same(kc.serverErrors(), [], 'a faithful answer, not a stand-in failure')
})

t.test('find matches exactly with exact: true, by infix without it, and search by prefix', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)
  const alice = kc.user('alice')

  const exact = await admin.users.find({ username: 'alice', exact: true })
  const partialExact = await admin.users.find({ username: 'ali', exact: true })
  const infix = await admin.users.find({ username: 'LIC' })
  const prefix = await admin.users.find({ search: 'bo' })
  const notInfix = await admin.users.find({ search: 'ob' })
  const wildcard = await admin.users.find({ search: '*ob*' })
  const byId = await admin.users.find({ search: `id:${alice.sub}` })
  const brief = await admin.users.find({ email: 'alice@example.test', briefRepresentation: true })
  const paged = await admin.users.find({ first: 1, max: 1 })

  t.match(exact, [{ id: alice.sub, username: 'alice', email: 'alice@example.test', firstName: 'Alice', lastName: 'Admin', enabled: true, emailVerified: true }])
  t.equal(exact.length, 1)
  t.same(partialExact, [])
  t.same(infix.map((u) => u.username), ['alice'])
  t.same(prefix.map((u) => u.username), ['bob'])
  t.same(notInfix, [])
  t.same(wildcard.map((u) => u.username), ['bob'])
  t.same(byId.map((u) => u.username), ['alice'])
  t.notOk(brief[0] !== undefined && 'requiredActions' in brief[0], 'brief representation leaves the details out')
  t.same(paged.map((u) => u.username), ['bob'], 'sorted by username, then paged')
  t.equal(await admin.users.count({ search: 'b' }), 1)
  t.equal(await admin.users.count(), 2)
  t.equal(await admin.users.findOne({ id: '00000000-0000-4000-8000-000000000000' }), null, 'an unknown id is 404, which the client turns into null')
})

t.test('update changes only what it is given; enabled: false makes the password grant invalid_grant', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)
  const { sub } = kc.user('alice')
  const before = await kc.passwordGrant('alice', 'alice-password')

  await admin.users.update({ id: sub }, { email: 'Alice@New.test', enabled: false })
  const clash = await refusal(admin.users.update({ id: sub }, { email: 'bob@example.test' }))
  const unknown = await refusal(admin.users.update({ id: 'no-such-user' }, { firstName: 'X' }))
  const refused = await passwordGrantError(kc, 'alice', 'alice-password')

  t.match(await admin.users.findOne({ id: sub }), { email: 'alice@new.test', enabled: false, firstName: 'Alice', lastName: 'Admin' })
  t.match(clash, { status: 409, body: { errorMessage: 'User exists with same email' } })
  t.match(unknown, { status: 404, body: { error: 'User not found' } })
  t.equal(refused.status, 400)
  t.same(refused.body, { error: 'invalid_grant', error_description: 'Account disabled' })
  const refresh = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: before.refresh_token ?? '' })
  t.equal(refresh.status, 400, 'a disabled user\'s refresh token stops working too')
  t.equal(refresh.body['error'], 'invalid_grant')

  await admin.users.update({ id: sub }, { enabled: true })
  await t.resolves(kc.passwordGrant('alice@new.test', 'alice-password'), 'enabled again, and the new e-mail logs in')
})

t.test('resetPassword: the new password works, the old one fails', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)
  const { sub } = kc.user('bob')

  await admin.users.resetPassword({ id: sub, credential: { type: 'password', value: 'bob-new-password', temporary: false } })

  t.equal(kc.passwordOf('bob'), 'bob-new-password')
  await t.resolves(kc.passwordGrant('bob', 'bob-new-password'))
  const old = await passwordGrantError(kc, 'bob', 'bob-password')
  t.equal(old.status, 400)
  t.same(old.body, { error: 'invalid_grant', error_description: 'Invalid user credentials' })
  t.equal(kc.adminCount('PUT', '/reset-password'), 1)
  t.match(kc.adminCalls(), [{ method: 'PUT', path: `/users/${sub}/reset-password`, status: 204 }])
})

t.test('a temporary password leaves the account not fully set up until a permanent one is set', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)
  const { sub } = kc.user('bob')

  await admin.users.resetPassword({ id: sub, credential: { type: 'password', value: 'temporary-one', temporary: true } })
  const pending = await passwordGrantError(kc, 'bob', 'temporary-one')
  await admin.users.resetPassword({ id: sub, credential: { type: 'password', value: 'permanent-one', temporary: false } })

  t.equal(pending.status, 400)
  t.same(pending.body, { error: 'invalid_grant', error_description: 'Account is not fully set up' })
  t.match(await admin.users.findOne({ id: sub }), { requiredActions: [] })
  await t.resolves(kc.passwordGrant('bob', 'permanent-one'))
})

t.test('the password policy refuses a short password with Keycloak\'s error and keeps the old one', async (t) => {
  const kc = await standin(t, { passwordMinLength: 12 })
  const admin = await adminOf(kc)
  const { sub } = kc.user('bob')

  const short = await refusal(admin.users.resetPassword({ id: sub, credential: { type: 'password', value: 'short', temporary: false } }))
  const empty = await refusal(admin.users.resetPassword({ id: sub, credential: { type: 'password', value: '  ', temporary: false } }))
  const onCreate = await refusal(admin.users.create({ username: 'frank', enabled: true, credentials: [{ type: 'password', value: 'tiny' }] }))

  t.match(short, { status: 400, body: { error: 'invalidPasswordMinLengthMessage', error_description: 'Invalid password: minimum length 12.' } })
  t.match(empty, { status: 400, body: { error: 'Empty password not allowed' } })
  t.match(onCreate, { status: 400, body: { error: 'invalidPasswordMinLengthMessage' } })
  t.equal(kc.users.length, 2, 'frank was not created')
  await t.resolves(kc.passwordGrant('bob', 'bob-password'))
})

t.test('logout ends the user\'s sessions: refresh fails and the client hears it on the back channel', async (t) => {
  const receiver = await startLogoutReceiver(t)
  const kc = await standin(t, { clients: [gatehouseWith({ backchannelLogoutUri: receiver.url })] })
  const admin = await adminOf(kc)
  const { sub } = kc.user('alice')
  const tokens = await kc.passwordGrant('alice', 'alice-password')
  const sid = decodeJwt(tokens.access_token)['sid']

  const sessions = await admin.users.listSessions({ id: sub })
  await admin.users.logout({ id: sub })

  t.match(sessions, [{ id: sid, userId: sub, username: 'alice', clients: { [kc.clients[0]?.id ?? '']: 'gatehouse' } }])
  t.equal(receiver.received.length, 1, 'delivered before the Admin API answered')
  t.match(decodeJwt(receiver.received[0]?.get('logout_token') ?? ''), { sub, sid, events: { 'http://schemas.openid.net/event/backchannel-logout': {} } })
  t.match(kc.backchannelLogouts(), [{ clientId: 'gatehouse', sub, sid, status: 200 }])
  const refresh = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token ?? '' })
  t.equal(refresh.status, 400)
  t.equal(refresh.body['error'], 'invalid_grant')
  t.same(await admin.users.listSessions({ id: sub }), [])
  t.equal(kc.adminCount('POST', '/logout'), 1)
})

t.test('delete removes the user: no login, no refresh, and no back-channel logout', async (t) => {
  const receiver = await startLogoutReceiver(t)
  const kc = await standin(t, { clients: [gatehouseWith({ backchannelLogoutUri: receiver.url })] })
  const admin = await adminOf(kc)
  const { sub } = kc.user('bob')
  const tokens = await kc.passwordGrant('bob', 'bob-password')

  await admin.users.del({ id: sub })

  t.equal(await admin.users.findOne({ id: sub }), null)
  t.equal(kc.userById(sub), undefined)
  t.equal((await passwordGrantError(kc, 'bob', 'bob-password')).status, 400)
  const refresh = await kc.tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token ?? '' })
  t.equal(refresh.status, 400)
  t.same(receiver.received, [])
  t.match(await refusal(admin.users.del({ id: sub })), { status: 404, body: { error: 'User not found' } })
})

t.test('group membership changes show in listGroups and in the groups claim of new tokens', async (t) => {
  const kc = await standin(t, { groups: ['/contractors'] })
  const admin = await adminOf(kc)
  const { sub } = kc.user('bob')
  const admins = kc.group('/staff/admins')

  const topLevel = await admin.groups.find()
  const byPath = await admin.groups.find({ search: 'admins' })
  await admin.users.addToGroup({ id: sub, groupId: admins.id })
  const joined = await admin.users.listGroups({ id: sub })
  const joinedClaim = decodeJwt((await kc.passwordGrant('bob', 'bob-password')).access_token)['groups']
  await admin.users.delFromGroup({ id: sub, groupId: kc.group('/staff').id })
  const left = await admin.users.listGroups({ id: sub })
  const leftClaim = decodeJwt((await kc.passwordGrant('bob', 'bob-password')).access_token)['groups']

  t.match(topLevel, [
    { id: kc.group('/contractors').id, name: 'contractors', path: '/contractors', subGroupCount: 0, subGroups: [] },
    { id: kc.group('/staff').id, name: 'staff', path: '/staff', subGroupCount: 1, subGroups: [] }
  ])
  t.equal(topLevel.length, 2)
  t.match(byPath, [{ path: '/staff', subGroups: [{ id: admins.id, name: 'admins', path: '/staff/admins', parentId: kc.group('/staff').id }] }])
  t.same(joined.map((g) => g.path), ['/staff', '/staff/admins'])
  t.same(joinedClaim, ['/staff', '/staff/admins'])
  t.same(left.map((g) => g.path), ['/staff/admins'])
  t.same(leftClaim, ['/staff/admins'])
  t.match(await admin.realms.getGroupByPath({ realm: kc.realm, path: '/staff' }), { id: kc.group('/staff').id, subGroups: [{ path: '/staff/admins' }] })
  t.match(await refusal(admin.users.addToGroup({ id: sub, groupId: 'no-such-group' })), { status: 404, body: { error: 'Group not found' } })
})

t.test('group ids are stable: the same path has the same id in another stand-in', async (t) => {
  const one = await standin(t)
  const two = await standin(t)

  t.equal(one.group('/staff/admins').id, two.group('/staff/admins').id)
  t.not(one.group('/staff').id, one.group('/staff/admins').id)
})

t.test('a garbage, expired or foreign token is 401, whatever the path', async (t) => {
  const kc = await standin(t)
  // A user token holding manage-users, with no session to end: valid until one thing is changed.
  const claims = { sid: undefined, resource_access: { 'realm-management': { roles: ['manage-users'] } } }
  const now = Math.floor(Date.now() / 1000)

  const garbage = new KcAdminClient({ baseUrl: kc.baseUrl, realmName: kc.realm })
  garbage.setAccessToken('garbage')
  const expired = adminWithToken(kc, await kc.mintAccessToken({ ...claims, iat: now - 600, exp: now - 300 }))
  const foreign = adminWithToken(kc, await kc.mintAccessToken(claims, { key: await generateSigningKey() }))
  const otherIssuer = adminWithToken(kc, await kc.mintAccessToken({ ...claims, iss: 'https://elsewhere.example/realms/test' }))
  const live = adminWithToken(kc, await kc.mintAccessToken(claims))

  for (const [name, client] of [['garbage', garbage], ['expired', expired], ['foreign key', foreign], ['other issuer', otherIssuer]] as const) {
    t.match(await refusal(client.users.find()), { status: 401, body: { error: 'HTTP 401 Unauthorized' } }, name)
  }
  t.match(await refusal(garbage.roles.find()), { status: 401 }, 'an unknown path is 401 before it is 404')
  t.equal((await live.users.find()).length, 2, 'the same claims, live and well signed, are accepted')
  t.match(kc.adminCalls().map((c) => c.status), [401, 401, 401, 401, 401, 200])
})

t.test('a service account without manage-users may read but not write (403)', async (t) => {
  const kc = await standin(t, {
    clients: [
      gatehouseWith({}),
      { clientId: 'reader', secret: 'reader-secret', serviceAccount: { clientRoles: { 'realm-management': ['view-users'] } } },
      { clientId: 'querier', secret: 'querier-secret', serviceAccount: { clientRoles: { 'realm-management': ['query-users'] } } },
      { clientId: 'nobody', secret: 'nobody-secret', serviceAccount: true }
    ]
  })
  const reader = await adminOf(kc, 'reader', 'reader-secret')
  const querier = await adminOf(kc, 'querier', 'querier-secret')
  const nobody = await adminOf(kc, 'nobody', 'nobody-secret')
  const { sub } = kc.user('bob')

  const read = await reader.users.find({ username: 'bob', exact: true })
  const groups = await reader.groups.find()
  const create = await refusal(reader.users.create({ username: 'mallory', enabled: true }))
  const reset = await refusal(reader.users.resetPassword({ id: sub, credential: { type: 'password', value: 'pwned', temporary: false } }))
  const join = await refusal(reader.users.addToGroup({ id: sub, groupId: kc.group('/staff/admins').id }))

  t.same(read.map((u) => u.id), [sub])
  t.match(read, [{ access: { view: true, manage: false } }])
  t.equal(groups.length, 1, 'view-users includes query-groups')
  for (const refused of [create, reset, join]) t.match(refused, { status: 403, body: { error: 'HTTP 403 Forbidden' } })
  t.equal(kc.passwordOf('bob'), 'bob-password')
  t.equal(kc.users.length, 2)
  t.same(await querier.users.find(), [], 'query-users alone lists no one, as Keycloak without fine-grained permissions')
  t.match(await refusal(querier.users.findOne({ id: sub })), { status: 403 }, 'and may not view one user')
  t.match(await refusal(nobody.users.find()), { status: 403 })
  t.match(await refusal(nobody.users.findOne({ id: 'no-such-user' })), { status: 403 }, 'an unknown id is 403, not 404, without query rights')
  t.equal(kc.adminCount('POST', '/users'), 1)
})

t.test('unknown admin paths are 404 and other realms are not found; resetCounts clears the log', async (t) => {
  const kc = await standin(t)
  const admin = await adminOf(kc)

  const roles = await refusal(admin.roles.find())
  const otherRealm = await refusal(admin.users.find({ realm: 'other' }))

  t.match(roles, { status: 404, body: { error: 'HTTP 404 Not Found' } })
  t.match(otherRealm, { status: 404, body: { error: 'Realm not found.' } })
  t.same(kc.adminCalls(), [{ method: 'GET', path: '/roles', status: 404 }, { method: 'GET', path: '/users', status: 404 }])
  t.equal(kc.countOf('/admin/realms/test/roles'), 1, 'admin requests are counted with the rest')
  kc.resetCounts()
  t.same(kc.adminCalls(), [])
  t.equal(kc.adminCount('GET', '/roles'), 0)
})
