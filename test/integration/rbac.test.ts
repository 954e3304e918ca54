// Issue 13 through the real sidecar on sockets: roles, inheritance, Keycloak group and client
// role mappings, offline sessions deciding as their online ones, bypass attempts, hot reload
// by file watch and SIGHUP, and `policy check` against the running server, row by row.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startCluster, type Cluster } from '../fixtures/cluster.ts'
import { startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { BrowserClient } from '../fixtures/browser-client.ts'
import { formLogin, takeKeycloakDown } from '../fixtures/sessions.ts'
import { runInProcess, startInProcess } from '../fixtures/cli.ts'
import { RBAC_POLICY, RBAC_USERS } from '../fixtures/rbac.ts'
import { hashPassword } from '../../src/session/passwords.ts'
import { UsersRepository } from '../../src/store/users.ts'

/** Routes every user is asked about: method and path. */
const ROUTES: Array<[string, string]> = [
  ['GET', '/hello'], ['GET', '/admin/settings'], ['GET', '/admin/users/7'], ['GET', '/catalogue/7'], ['PUT', '/catalogue/7'],
  ['GET', '/audit/log'], ['GET', '/platform/tools'], ['GET', '/partners/deals'], ['GET', '/actuator/env'], ['GET', '/public/x']
]

/** Expected status per user for {@link ROUTES}, in order. */
const EXPECTED: Record<string, number[]> = {
  pam: [200, 200, 200, 200, 200, 403, 200, 200, 403, 200],
  bob: [200, 403, 403, 200, 403, 403, 403, 403, 403, 200],
  carl: [200, 403, 403, 200, 403, 200, 403, 403, 403, 200],
  una: [200, 403, 403, 403, 403, 403, 403, 403, 403, 200]
}

async function rbacCluster (t: Parameters<typeof startCluster>[0]): Promise<Cluster> {
  return await startCluster(t, 1, { users: RBAC_USERS })
}

/** The Cookie header of a signed-in browser, for requests with any method. */
function sessionCookie (browser: BrowserClient, proxyUrl: string): Record<string, string> {
  return { cookie: `gatehouse_session=${browser.cookie(proxyUrl, 'gatehouse_session')?.value ?? ''}` }
}

t.test('roles from groups, client roles and inheritance decide; every deny leaves the app untouched and names what is missing', async (t) => {
  const cluster = await rbacCluster(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings(), { 'app.yaml': RBAC_POLICY }))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const tokens = Object.fromEntries(await Promise.all(RBAC_USERS.map(async (u) => [u.username, (await cluster.standin.passwordGrant(u.username, u.password)).access_token] as const)))
  for (const user of RBAC_USERS) {
    for (const [i, [method, path]] of ROUTES.entries()) {
      const before = cluster.upstream.requests.length
      const res = await rawRequest(gatehouse.proxyUrl, path, { method, headers: { authorization: `Bearer ${tokens[user.username] as string}` } })
      const want = EXPECTED[user.username]?.[i] as number
      t.equal(res.status, want, `${user.username} ${method} ${path}`)
      t.equal(cluster.upstream.requests.length - before, want === 200 ? 1 : 0, `${user.username} ${method} ${path}: upstream requests`)
    }
  }
  // What pam's app sees: the group made her an admin, who inherits editor and viewer.
  await rawRequest(gatehouse.proxyUrl, '/admin/settings', { headers: { authorization: `Bearer ${tokens.pam as string}` } })
  const seen = cluster.upstream.requests.at(-1)?.headers ?? {}
  t.equal(seen['x-auth-request-groups'], '/platform/admins')
  t.match(String(seen['x-auth-request-roles']).split(','), ['default-roles-test', 'admin', 'editor', 'viewer'])
  t.notOk(String(seen['x-auth-request-roles']).split(',').includes('offline_access'), 'realm_roles mapped it to nothing')
  t.equal(seen['x-auth-request-permissions'], 'users:read,users:write,catalogue:write,catalogue:read')
  // The access line of a deny names the rule and the missing requirement.
  const lines = (): Array<Record<string, unknown>> => gatehouse.log.entries().filter((e) => e.msg === 'request')
  const denied = lines().filter((e) => e.decision === 'deny' && e.user !== null)
  t.ok(denied.some((e) => e.rule === 'admin area' && e.reason === 'missing_role' && e.missing === 'any of roles admin'), 'missing_role')
  t.ok(denied.some((e) => e.rule === 'user admin' && e.reason === 'missing_permission' && e.missing === 'permissions users:write'), 'missing_permission')
  t.ok(denied.some((e) => e.rule === 'platform' && e.reason === 'missing_group' && e.missing === 'any of groups /platform/admins'), 'missing_group')
  t.ok(denied.some((e) => e.rule === 'audit' && e.reason === 'missing_role' && e.missing === 'roles auditor (all of auditor, viewer)'), 'all_roles')
  t.ok(denied.some((e) => e.rule === 'partners' && e.reason === 'email_not_allowed' && e.missing === 'a verified e-mail address in @partner.example'), 'unverified e-mail')
  t.ok(lines().filter((e) => e.decision === 'allow').every((e) => e.missing === null), 'allows carry no missing field')
})

t.test('an offline session (cached credential, or local) is allowed and denied exactly as its online session was', async (t) => {
  const cluster = await rbacCluster(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'keycloak' } }, { 'app.yaml': RBAC_POLICY }))
  await gatehouse.started
  /** Statuses of ROUTES for a signed-in browser, and the mode the app saw. */
  const table = async (browser: BrowserClient): Promise<{ statuses: number[], modes: Set<string> }> => {
    const statuses: number[] = []
    const modes = new Set<string>()
    for (const [method, path] of ROUTES) {
      const before = cluster.upstream.requests.length
      const res = await rawRequest(gatehouse.proxyUrl, path, { method, headers: sessionCookie(browser, gatehouse.proxyUrl) })
      statuses.push(res.status)
      const mode = cluster.upstream.requests.length > before ? cluster.upstream.requests.at(-1)?.headers['x-auth-request-mode'] : undefined
      if (mode !== undefined) modes.add(String(mode)) // public routes carry no identity
      t.equal(cluster.upstream.requests.length - before, res.status === 200 ? 1 : 0, `${method} ${path}: upstream requests`)
    }
    return { statuses, modes }
  }
  const online: Record<string, number[]> = {}
  for (const user of RBAC_USERS) {
    const browser = new BrowserClient()
    t.equal((await formLogin(browser, gatehouse.proxyUrl, user.username, user.password)).status, 200, `${user.username} signs in online`)
    const { statuses, modes } = await table(browser)
    t.same([...modes], ['keycloak'], `${user.username}: online`)
    t.same(statuses, EXPECTED[user.username], `${user.username}: online decisions`)
    online[user.username] = statuses
  }
  await takeKeycloakDown(cluster.servers[0] as Cluster['servers'][number], gatehouse.app)
  for (const user of RBAC_USERS) {
    const browser = new BrowserClient()
    t.equal((await formLogin(browser, gatehouse.proxyUrl, user.username, user.password)).status, 200, `${user.username} signs in with the cached credential`)
    const { statuses, modes } = await table(browser)
    t.same([...modes], ['cached'], `${user.username}: offline`)
    t.same(statuses, online[user.username], `${user.username}: offline decisions are the online ones`)
  }
})

t.test('auth.primary local: a local session decides as the same person\'s Keycloak session did', async (t) => {
  const cluster = await rbacCluster(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...cluster.settings(), auth: { primary: 'local' } }, { 'app.yaml': RBAC_POLICY }))
  await gatehouse.started
  const users = new UsersRepository(gatehouse.db)
  // The local table holds what Keycloak holds for them (as users migrate-to-keycloak keeps them).
  for (const user of RBAC_USERS.filter((u) => u.emailVerified !== false)) {
    users.create({ username: user.username, email: user.email ?? null, passwordHash: await hashPassword(user.password), roles: [...user.realmRoles ?? [], ...Object.entries(user.clientRoles ?? {}).flatMap(([c, rs]) => rs.map((r) => `${c}:${r}`))], groups: user.groups ?? [] }, Date.now())
  }
  const decisions = async (username: string, password: string): Promise<{ statuses: number[], mode: string }> => {
    const browser = new BrowserClient()
    t.equal((await formLogin(browser, gatehouse.proxyUrl, username, password)).status, 200)
    const statuses: number[] = []
    let mode = ''
    for (const [method, path] of ROUTES) {
      const before = cluster.upstream.requests.length
      statuses.push((await rawRequest(gatehouse.proxyUrl, path, { method, headers: sessionCookie(browser, gatehouse.proxyUrl) })).status)
      const seen = cluster.upstream.requests.length > before ? cluster.upstream.requests.at(-1)?.headers['x-auth-request-mode'] : undefined
      if (seen !== undefined) mode = String(seen) // public routes carry no identity
    }
    return { statuses, mode }
  }
  const online: Record<string, number[]> = {}
  for (const user of RBAC_USERS.filter((u) => u.emailVerified !== false)) {
    const got = await decisions(user.username, user.password)
    t.equal(got.mode, 'keycloak', `${user.username}: online, Keycloak's tokens`)
    t.same(got.statuses, EXPECTED[user.username], `${user.username}: online decisions`)
    online[user.username] = got.statuses
  }
  await takeKeycloakDown(cluster.servers[0] as Cluster['servers'][number], gatehouse.app)
  for (const user of RBAC_USERS.filter((u) => u.emailVerified !== false)) {
    const got = await decisions(user.username, user.password)
    t.equal(got.mode, 'local', `${user.username}: offline, the local table`)
    t.same(got.statuses, online[user.username], `${user.username}: local decisions are the online ones`)
  }
})

t.test('bypass attempts against the protected /admin/** reach its decision or a 400, never the public rule', async (t) => {
  const cluster = await rbacCluster(t)
  const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), cluster.settings(), { 'app.yaml': RBAC_POLICY }))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const bob = (await cluster.standin.passwordGrant('bob', 'bob-password')).access_token
  const pam = (await cluster.standin.passwordGrant('pam', 'pam-password')).access_token
  const attempts: Array<[string, 403 | 400]> = [
    ['//admin', 403], ['//admin//users', 403], ['/ADMIN', 403], ['/Admin/users', 403], ['/aDmIn/Users/1', 403],
    ['/admin%2fusers', 400], ['/admin%2Fusers', 400], ['/%2e%2e/admin', 400], ['/public/..%2fadmin', 400], ['/public/..%2Fadmin/users', 400],
    ['/public/../admin', 403], ['/public/%2e%2e/admin', 403], ['/Public/../admin', 403], ['/%61dmin', 403], ['/%41DMIN/users', 403],
    ['/admin;x=1', 400], ['/admin;/users', 400], ['/public;/../admin', 400], ['/admin%3Busers', 400], ['/admin/users;jsessionid=1', 400],
    ['/%2561dmin', 400], ['/%252e%252e/admin', 400], ['/public/%252e%252e/admin', 400], ['/admin%252fusers', 400], ['/%25%36%31dmin', 400],
    ['/admin/./users', 403], ['/admin/x/../users', 403], ['/./admin', 403]
  ]
  for (const [path, status] of attempts) {
    const before = cluster.upstream.requests.length
    const res = await rawRequest(gatehouse.proxyUrl, path, { headers: { authorization: `Bearer ${bob}` } })
    t.equal(res.status, status, `${path}: bob`)
    t.equal(cluster.upstream.requests.length, before, `${path}: the app got nothing`)
    const line = gatehouse.log.entries().findLast((e) => e.msg === 'request')
    t.not(line?.reason, 'public', `${path}: never the public rule`)
    if (status === 403) t.match(line?.rule, /admin area|user admin/, `${path}: the protected rule decided`)
    // The protected rule's decision, not a blanket refusal: an admin gets through.
    if (status === 403) t.equal((await rawRequest(gatehouse.proxyUrl, path, { headers: { authorization: `Bearer ${pam}` } })).status, 200, `${path}: pam, an admin`)
  }
})

t.test('editing a policy file changes decisions without a restart; a broken edit changes nothing and is reported', async (t) => {
  const cluster = await rbacCluster(t)
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, { ...cluster.settings(), policies: { reload_debounce_ms: 0 } }, { 'app.yaml': RBAC_POLICY }))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const bob = (await cluster.standin.passwordGrant('bob', 'bob-password')).access_token
  const ask = async (path: string): Promise<number> => (await rawRequest(gatehouse.proxyUrl, path, { headers: { authorization: `Bearer ${bob}` } })).status
  const status = async (): Promise<Record<string, unknown>> => await (await fetch(`${gatehouse.adminUrl}/status`)).json() as Record<string, unknown>
  const reloaded = (): Promise<string> => new Promise((resolve) => { const off = gatehouse.app.policies.onReload((o) => { if (o.result !== 'unchanged') { off(); resolve(o.result) } }) })
  const first = await status()
  t.match(first.policy, { version: gatehouse.app.policy.version, files: ['app.yaml'], rules: 10, roles: 4, watching: true, last_reload: null })
  t.equal(await ask('/audit/log'), 403)

  // bob's viewer role now inherits nothing new, but the audit rule accepts viewers.
  let next = reloaded()
  writeFileSync(join(dir, 'policies', 'app.yaml'), RBAC_POLICY.replace('all_roles: [auditor, viewer]', 'any_roles: [auditor, viewer]'))
  t.equal(await next, 'success')
  t.equal(await ask('/audit/log'), 200, 'the same token, the new rule, no restart')
  const second = await status()
  t.not((second.policy as { version: string }).version, (first.policy as { version: string }).version, 'a new version')
  t.match(second.policy, { last_reload: { trigger: 'watch', result: 'success' } })

  next = reloaded()
  writeFileSync(join(dir, 'policies', 'app.yaml'), `${RBAC_POLICY.replace('all_roles: [auditor, viewer]', 'any_roles: [auditor, viewer]')}  - { name: broken, path: /x, any_roles: [] }\n`)
  t.equal(await next, 'failure')
  t.equal(await ask('/audit/log'), 200, 'the running set stays')
  t.equal(await ask('/admin/settings'), 403)
  const third = await status()
  t.equal((third.policy as { version: string }).version, (second.policy as { version: string }).version, 'the version in force is unchanged')
  const problem = 'app.yaml (line 26): rules[10].any_roles: expected a list of at least 1 item, received a list (0 items)'
  t.match(third.policy, { last_reload: { trigger: 'watch', result: 'failure', problems: [problem] } })
  const logged = gatehouse.log.entries().find((e) => e.msg === 'policy reload rejected; the running policies stay')
  t.match(logged, { level: 50, problems: [problem] }, 'logged at error with file and line')
  const metrics = await (await fetch(`${gatehouse.adminUrl}/metrics`)).text()
  t.match(metrics, /^gatehouse_policy_reloads_total\{result="success"\} 1$/m)
  t.match(metrics, /^gatehouse_policy_reloads_total\{result="failure"\} 1$/m)
  const page = await (await fetch(`${gatehouse.adminUrl}/status.html`)).text()
  t.match(page, /last reload rejected/, 'the status page says so')
})

t.test('SIGHUP reloads the policies of gatehouse serve', async (t) => {
  const cluster = await rbacCluster(t)
  const dir = t.testdir()
  writeConfig(dir, { ...cluster.settings(), policies: { watch: false }, log: { level: 'info' } }, { 'app.yaml': 'rules:\n  - { path: /hello, allow: deny }\n' })
  const serve = startInProcess(['serve', '-c', join(dir, 'config.yaml')])
  t.teardown(async () => { serve.signal(); await serve.done })
  await serve.waitForLog('gatehouse listening')
  const proxy = String(JSON.parse(serve.log().split('\n').find((l) => l.includes('gatehouse listening')) as string).proxy)
  t.equal((await rawRequest(proxy, '/hello')).status, 403)
  writeFileSync(join(dir, 'policies', 'app.yaml'), 'rules:\n  - { path: /hello, allow: public }\n')
  t.equal((await rawRequest(proxy, '/hello')).status, 403, 'no watch: nothing changes until the signal')
  serve.reload()
  await serve.waitForLog('policies reloaded')
  t.equal((await rawRequest(proxy, '/hello')).status, 200)
  t.match(serve.log(), /"trigger":"signal"/)
})

t.test('policy check gives the running server\'s answer for every row of a decision table', async (t) => {
  const cluster = await rbacCluster(t)
  const dir = t.testdir()
  const config = writeConfig(dir, cluster.settings(), { 'app.yaml': RBAC_POLICY })
  const gatehouse = await startGatehouse(t, config)
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const configPath = join(dir, 'config.yaml')
  const env = { GATEHOUSE_ENV: '' }
  const users = new UsersRepository(gatehouse.db)
  users.create({ username: 'lou', email: 'lou@partner.example', passwordHash: await hashPassword('lou-password'), roles: ['editor'], groups: ['/platform/admins'] }, Date.now())
  const lou = new BrowserClient()
  t.equal((await formLogin(lou, gatehouse.proxyUrl, 'lou', 'lou-password')).status, 200)
  const tokens = Object.fromEntries(await Promise.all(RBAC_USERS.map(async (u) => [u.username, (await cluster.standin.passwordGrant(u.username, u.password)).access_token] as const)))
  // The same roles as a token would carry them, minted: --roles must agree with it.
  const minted = await cluster.standin.mintAccessToken({ realm_access: { roles: ['auditor', 'viewer'] }, groups: ['/staff'], resource_access: undefined, email: undefined, email_verified: undefined })
  const ways: Array<{ label: string, args: string[], headers: Record<string, string> | null, browser?: BrowserClient }> = [
    ...RBAC_USERS.map((u) => ({ label: `token of ${u.username}`, args: ['--token', tokens[u.username] as string], headers: { authorization: `Bearer ${tokens[u.username] as string}` } })),
    { label: '--roles auditor,viewer --groups /staff', args: ['--roles', 'auditor,viewer', '--groups', '/staff'], headers: { authorization: `Bearer ${minted}` } },
    { label: 'local user lou', args: ['--user', 'lou'], headers: null, browser: lou }
  ]
  const routes: Array<[string, string]> = [...ROUTES, ['DELETE', '/catalogue/9'], ['GET', '/ADMIN/users/1'], ['GET', '/admin;x=1']]
  let rows = 0
  for (const way of ways) {
    for (const [method, path] of routes) {
      const headers = way.browser !== undefined ? sessionCookie(way.browser, gatehouse.proxyUrl) : way.headers ?? {}
      const res = await rawRequest(gatehouse.proxyUrl, path, { method, headers })
      const server = gatehouse.log.entries().findLast((e) => e.msg === 'request') as Record<string, unknown>
      const cli = await runInProcess(['policy', 'check', '-c', configPath, '--json', ...way.args, '--method', method, '--path', path], { env })
      const report = JSON.parse(cli.stdout) as Record<string, unknown>
      t.equal(report.status, res.status, `${way.label} ${method} ${path}: status`)
      t.equal(report.reason, server.reason, `${way.label} ${method} ${path}: reason`)
      t.equal(report.rule, server.rule, `${way.label} ${method} ${path}: rule`)
      t.equal(report.missing, server.missing, `${way.label} ${method} ${path}: missing`)
      t.equal(cli.code, res.status === 200 ? 0 : 3, `${way.label} ${method} ${path}: exit code`)
      rows++
    }
  }
  t.equal(rows, ways.length * routes.length)
})

t.test('policy check explains where each role and permission came from, as text and JSON', async (t) => {
  const cluster = await rbacCluster(t)
  const dir = t.testdir()
  const gatehouse = await startGatehouse(t, writeConfig(dir, cluster.settings(), { 'app.yaml': RBAC_POLICY }))
  await gatehouse.app.keycloak.jwks.refresh('manual')
  const configPath = join(dir, 'config.yaml')
  const carl = (await cluster.standin.passwordGrant('carl', 'carl-password')).access_token
  // --token - reads the token from standard input, out of the shell's history and ps.
  const text = await runInProcess(['policy', 'check', '-c', configPath, '--token', '-', '--path', '/audit/log'], { input: `${carl}\n` })
  t.equal(text.code, 0)
  t.equal(text.stderr, '')
  const lines = text.stdout.split('\n')
  t.equal(lines[0], 'GET /audit/log: ALLOW 200 (role_granted)')
  t.match(lines[1], /^rule: audit \[app\.yaml \(line 22\)\]$/)
  t.match(text.stdout, /\n {2}auditor\s+client role gatehouse:auditor \(client_roles\)\n/)
  t.match(text.stdout, /\n {2}viewer\s+group \/staff \(group_roles\)\n/)
  t.match(text.stdout, /\n {2}default-roles-test\s+token claim realm_access\.roles\n/)
  t.match(text.stdout, /\n {2}audit:read\s+role auditor\n/)
  t.match(text.stdout, /\nheader x-auth-request-permissions: audit:read,catalogue:read\n/)
  t.notMatch(text.stdout, carl, 'the token is never printed')

  const json = await runInProcess(['policy', 'check', '-c', configPath, '--json', '--roles', 'admin', '--method', 'delete', '--path', '/catalogue/1', '--email', 'a@b.example'])
  const report = JSON.parse(json.stdout) as Record<string, unknown>
  t.match(report, {
    request: { method: 'DELETE', path: '/catalogue/1', host: null },
    decision: 'allow',
    rule: 'catalogue writes',
    identity: { source: 'command line', email: 'a@b.example', email_verified: true },
    roles: [{ name: 'admin', sources: ['given on the command line'] }, { name: 'editor', sources: ['inherited from admin'] }, { name: 'viewer', sources: ['inherited from editor'] }],
    permissions: [{ name: 'users:read', sources: ['role admin'] }, { name: 'users:write', sources: ['role admin'] }, { name: 'catalogue:write', sources: ['role editor'] }, { name: 'catalogue:read', sources: ['role viewer'] }],
    policy_version: gatehouse.app.policy.version
  })
  const denied = await runInProcess(['policy', 'check', '-c', configPath, '--roles', 'viewer', '--path', '/admin/users/1'])
  t.equal(denied.code, 3)
  t.match(denied.stdout, /^GET \/admin\/users\/1: DENY 403 \(missing_permission\)\nrule: user admin \[app\.yaml \(line 18\)\]\nmissing: permissions users:write\n/)
  const unknown = await runInProcess(['policy', 'check', '-c', configPath, '--user', 'nobody', '--path', '/x'])
  t.equal(unknown.code, 2)
  t.equal(unknown.stderr, 'gatehouse: no local user and no live session named "nobody"\n')
  const twoSources = await runInProcess(['policy', 'check', '-c', configPath, '--user', 'a', '--roles', 'b', '--path', '/x'])
  t.equal(twoSources.code, 2)
  t.match(twoSources.stderr, /needs exactly one of --user U, --token JWT/)
  const validated = await runInProcess(['policy', 'validate', '-c', configPath, '--json'])
  t.match(JSON.parse(validated.stdout), { valid: true, version: gatehouse.app.policy.version, files: ['app.yaml'], rules: 10, roles: 4, group_mappings: 2, role_mappings: 3 })
  writeFileSync(join(dir, 'policies', 'zz.yaml'), 'roles:\n  a: { inherits: [b] }\n  b: { inherits: [a] }\n')
  const broken = await runInProcess(['policy', 'validate', '-c', configPath])
  t.equal(broken.code, 2)
  t.match(broken.stderr, /zz\.yaml \(line 2\): roles\.a\.inherits: expected no inheritance cycle .*, received the cycle a → b → a/)
})
