import t from 'tap'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import { runCli } from '../../src/cli/run.ts'
import { verifyPassword } from '../../src/session/passwords.ts'
import { AuditLogRepository } from '../../src/store/audit-log.ts'
import { openDatabase, type Db } from '../../src/store/db.ts'
import { UsersRepository } from '../../src/store/users.ts'
import { runInProcess, type CliResult } from '../fixtures/cli.ts'
import { writeConfig } from '../fixtures/gatehouse.ts'

const SETTINGS = {
  upstream: { url: 'http://127.0.0.1:9' },
  keycloak: { issuer: 'https://sso.example.com/realms/acme', server: 'http://127.0.0.1:9', client_id: 'app' }
}
const PASSWORD = 'correct horse battery staple'

/** A Gatehouse directory with its config, and a way to run `users` commands against it. */
function setup (t: { testdir: () => string, teardown: (fn: () => unknown) => void }, settings: Record<string, unknown> = {}): { dir: string, users: (args: string[], input?: string) => Promise<CliResult>, db: () => Db } {
  const dir = t.testdir()
  writeConfig(dir, { ...SETTINGS, ...settings })
  let opened: Db | null = null
  t.teardown(() => opened?.close())
  return {
    dir,
    /** `gatehouse users ARGS -c <this config>` in this process, `input` on standard input. */
    users: (args, input) => runInProcess(['users', ...args, '-c', join(dir, 'config.yaml')], input === undefined ? {} : { input }),
    db: () => (opened ??= openDatabase({ path: join(dir, 'gatehouse.db') }).db)
  }
}

t.test('users add reads the password from standard input and stores only an scrypt hash', async (t) => {
  const g = setup(t)
  const args = ['add', 'alice', '--email', 'alice@example.com', '--role', 'admin', '--role', 'editor', '--group', '/staff']
  const added = await g.users(args, `${PASSWORD}\n`)
  t.equal(added.code, 0, added.stderr)
  t.equal(added.stdout, 'added user alice (roles: admin, editor)\n')
  t.equal(added.stderr, '')
  t.notOk(args.includes(PASSWORD), 'the password is not an argument')

  const user = new UsersRepository(g.db()).find('alice')
  t.ok(user)
  t.match(user?.passwordHash, /^scrypt\$32768\$8\$1\$[\w-]+\$[\w-]+$/)
  t.equal(await verifyPassword(PASSWORD, user?.passwordHash ?? ''), true, 'the stored hash verifies')
  t.equal(await verifyPassword(`${PASSWORD}\n`, user?.passwordHash ?? ''), false, 'the trailing newline was not part of it')
  t.same({ email: user?.email, roles: user?.roles, groups: user?.groups, enabled: user?.enabled, source: user?.source }, { email: 'alice@example.com', roles: ['admin', 'editor'], groups: ['/staff'], enabled: true, source: 'local' })

  const audit = new AuditLogRepository(g.db()).since(0)
  t.same(audit.map((a) => ({ actor: a.actor, action: a.action, result: a.result, detail: a.detail })), [{ actor: 'alice', action: 'user_added', result: 'success', detail: { via: 'cli' } }])
})

t.test('users add accepts a password ending in CRLF and a name with surrounding spaces', async (t) => {
  const g = setup(t)
  const added = await g.users(['add', '  bob  '], `${PASSWORD}\r\nignored second line\n`)
  t.equal(added.code, 0, added.stderr)
  const user = new UsersRepository(g.db()).find('bob')
  t.equal(user?.username, 'bob', 'the name is trimmed')
  t.equal(await verifyPassword(PASSWORD, user?.passwordHash ?? ''), true, 'only the first line, without its line ending')
})

t.test('users add refuses a password the policy refuses, an empty one, or none, and creates nothing', async (t) => {
  const g = setup(t, { local_auth: { password_policy: { min_length: 14 } } })
  const cases: Array<[string, string]> = [
    ['short passwrd\n', 'gatehouse: password refused: The new password must be at least 14 characters long.\n'],
    ['my name is alice, ok?\n', 'gatehouse: password refused: The new password must not contain your user name.\n'],
    ['my name is ALICE, ok?\n', 'gatehouse: password refused: The new password must not contain your user name.\n'],
    ['\n', 'gatehouse: no password given on standard input (it reads the first line)\n'],
    ['', 'gatehouse: no password given on standard input (it reads the first line)\n']
  ]
  for (const [input, message] of cases) {
    const result = await g.users(['add', 'alice'], input)
    t.equal(result.code, 1, JSON.stringify(input))
    t.equal(result.stderr, message)
    t.equal(result.stdout, '')
  }
  t.equal(new UsersRepository(g.db()).find('alice'), null)
  t.same(new AuditLogRepository(g.db()).since(0), [])
})

t.test('a duplicate user name, in any case, is refused before a password is read', async (t) => {
  const g = setup(t)
  t.equal((await g.users(['add', 'alice'], `${PASSWORD}\n`)).code, 0)
  const before = new UsersRepository(g.db()).find('alice')
  for (const name of ['alice', 'ALICE']) {
    const dup = await g.users(['add', name], 'another long passphrase\n')
    t.equal(dup.code, 1)
    t.equal(dup.stderr, 'gatehouse: user "alice" already exists\n', 'names the existing spelling')
  }
  t.same(new UsersRepository(g.db()).find('alice'), before, 'the existing user is untouched')
})

t.test('users passwd replaces the hash, applies the policy and refuses the current password', async (t) => {
  const g = setup(t)
  t.equal((await g.users(['add', 'alice'], `${PASSWORD}\n`)).code, 0)
  const users = new UsersRepository(g.db())

  const same = await g.users(['passwd', 'alice'], `${PASSWORD}\n`)
  t.equal(same.code, 1)
  t.equal(same.stderr, 'gatehouse: password refused: The new password must differ from the current one.\n')
  const weak = await g.users(['passwd', 'alice'], 'alice1234567890\n')
  t.equal(weak.code, 1)
  t.match(weak.stderr, 'must not contain your user name')

  const changed = await g.users(['passwd', 'Alice'], 'a brand new passphrase\n')
  t.equal(changed.code, 0, changed.stderr)
  t.equal(changed.stdout, 'changed the password of alice\n')
  const hash = users.find('alice')?.passwordHash ?? ''
  t.equal(await verifyPassword('a brand new passphrase', hash), true)
  t.equal(await verifyPassword(PASSWORD, hash), false)
  t.notMatch(changed.stdout + changed.stderr, 'brand new')

  const unknown = await g.users(['passwd', 'nobody'], 'a brand new passphrase\n')
  t.equal(unknown.code, 1)
  t.equal(unknown.stderr, 'gatehouse: no such user "nobody"\n')

  const audit = new AuditLogRepository(g.db()).since(0)
  t.same(audit.map((a) => [a.actor, a.action, a.detail]), [['alice', 'user_added', { via: 'cli' }], ['alice', 'password_change', { via: 'cli' }]])
})

t.test('users passwd refuses a Keycloak user\'s cached credential', async (t) => {
  const g = setup(t)
  new UsersRepository(g.db()).cacheCredential({ username: 'kc', passwordHash: 'scrypt$1$1$1$a$b', keycloakId: 'sub-kc', email: null, roles: [], groups: [], expiresAt: Date.now() + 86_400_000 }, Date.now())
  const result = await g.users(['passwd', 'kc'], 'a brand new passphrase\n')
  t.equal(result.code, 1)
  t.equal(result.stderr, 'gatehouse: "kc" is a Keycloak user (cached credential): change the password in Keycloak\n')
  const dup = await g.users(['add', 'kc'], `${PASSWORD}\n`)
  t.equal(dup.stderr, 'gatehouse: user "kc" already exists (a Keycloak user\'s cached credential)\n')
})

t.test('users disable and enable flip the flag; disable is audited; an unknown user exits 1', async (t) => {
  const g = setup(t)
  t.equal((await g.users(['add', 'alice'], `${PASSWORD}\n`)).code, 0)
  const users = new UsersRepository(g.db())

  const disabled = await g.users(['disable', 'alice'])
  t.equal(disabled.code, 0, disabled.stderr)
  t.equal(disabled.stdout, 'disabled user alice\n')
  t.equal(users.find('alice')?.enabled, false)
  const enabled = await g.users(['enable', 'alice', '--json'])
  t.equal(enabled.code, 0)
  t.same(JSON.parse(enabled.stdout), { username: 'alice', enabled: true, sessions_ended: 0 })
  t.equal(users.find('alice')?.enabled, true)

  for (const sub of ['disable', 'enable']) {
    const unknown = await g.users([sub, 'nobody'])
    t.equal(unknown.code, 1)
    t.equal(unknown.stderr, 'gatehouse: no such user "nobody"\n')
  }
  t.same(new AuditLogRepository(g.db()).since(0).map((a) => [a.actor, a.action, a.detail]), [['alice', 'user_added', { via: 'cli' }], ['alice', 'user_disabled', { via: 'cli' }], ['alice', 'user_enabled', { via: 'cli' }]])
})

t.test('users list prints a table or JSON, never a password hash', async (t) => {
  const g = setup(t)
  const empty = await g.users(['list'])
  t.equal(empty.stdout, 'no users\n')
  t.equal((await g.users(['add', 'bob', '--email', 'bob@example.com'], `${PASSWORD}\n`)).code, 0)
  t.equal((await g.users(['add', 'alice', '--role', 'admin', '--group', '/ops'], `${PASSWORD}\n`)).code, 0)
  t.equal((await g.users(['disable', 'bob'])).code, 0)

  const json = await g.users(['list', '--json'])
  t.equal(json.code, 0, json.stderr)
  const listed = JSON.parse(json.stdout) as Array<Record<string, unknown>>
  const stored = new UsersRepository(g.db())
  t.same(listed, ['alice', 'bob'].map((name) => {
    const u = stored.find(name)
    if (u === null) throw new Error(`no ${name}`)
    return {
      username: name,
      email: u.email,
      first_name: null,
      last_name: null,
      roles: u.roles,
      groups: u.groups,
      enabled: name === 'alice',
      source: 'local',
      keycloak_id: null,
      has_password: true,
      password_changed_at: new Date(u.passwordChangedAt ?? 0).toISOString(),
      credential_expires_at: null,
      created_at: new Date(u.createdAt).toISOString(),
      updated_at: new Date(u.updatedAt).toISOString()
    }
  }))
  t.same(listed.map((u) => u.roles), [['admin'], []])
  t.notMatch(json.stdout, 'scrypt')

  const text = await g.users(['list'])
  t.equal(text.code, 0)
  const lines = text.stdout.trimEnd().split('\n')
  t.match(lines[0], /^USER +SOURCE +ENABLED +EMAIL +ROLES +GROUPS +PASSWORD +PASSWORD CHANGED +CREATED$/)
  t.match(lines[1], /^alice +local +yes +- +admin +\/ops +set +\d{4}-\d\d-\d\dT/)
  t.match(lines[2], /^bob +local +no +bob@example\.com +- +- +set /)
  t.notMatch(text.stdout, 'scrypt')
})

t.test('bad user names and misplaced options are usage errors (exit 2)', async (t) => {
  const g = setup(t)
  const cases: Array<[string[], string]> = [
    [['add', '   '], 'gatehouse: a user name is required\n'],
    [['add', 'a\tb'], 'gatehouse: user names may not contain control characters\n'],
    [['add', 'x'.repeat(129)], 'gatehouse: user names are at most 128 characters\n'],
    [['add', 'alice', 'bob'], 'gatehouse: usage: gatehouse users add USER\n'],
    [['add', 'alice', '--email', 'not-an-address'], 'gatehouse: --email "not-an-address" is not an email address\n'],
    [['passwd', 'alice', '--role', 'admin'], 'gatehouse: option --role does not apply to "users passwd" (only to users add and users migrate-to-keycloak); run gatehouse users --help\n'],
    [['add', 'alice', '--batch-size', '3'], 'gatehouse: option --batch-size does not apply to "users add" (only to users migrate-to-keycloak); run gatehouse users --help\n'],
    [['add', 'alice', '--frobnicate'], 'gatehouse: unknown option --frobnicate for "users add"; run gatehouse users --help\n'],
    [['add', 'alice', '--email', '--role', 'x'], 'gatehouse: option --email needs a value (to give one starting with -, write --email=--role); run gatehouse users --help\n'],
    [['list', 'alice'], 'gatehouse: usage: gatehouse users list [--json]\n'],
    [['frob'], 'gatehouse: unknown users subcommand "frob": use add, passwd, disable, enable, list or migrate-to-keycloak; run gatehouse users --help\n']
  ]
  for (const [args, message] of cases) {
    const result = await g.users(args, `${PASSWORD}\n`)
    t.equal(result.code, 2, args.join(' '))
    t.equal(result.stderr, message)
  }
  t.equal(new UsersRepository(g.db()).list().length, 0, 'nothing was added')
  const long = await g.users(['add', 'x'.repeat(128)], `${PASSWORD}\n`)
  t.equal(long.code, 0, '128 characters are accepted')
})

/** A stand-in terminal: readline puts it in raw mode, where Enter arrives as a carriage return. */
function fakeTerminal (): PassThrough & { isTTY: true, rawMode: boolean[], setRawMode: (mode: boolean) => unknown } {
  const stream = new PassThrough() as PassThrough & { isTTY: true, rawMode: boolean[], setRawMode: (mode: boolean) => unknown }
  stream.isTTY = true
  stream.rawMode = []
  stream.setRawMode = (mode) => { stream.rawMode.push(mode); return stream }
  return stream
}

function capture (): { stream: Writable, text: () => string } {
  const chunks: string[] = []
  return { stream: new Writable({ write (chunk: Buffer, _enc, done) { chunks.push(chunk.toString()); done() } }), text: () => chunks.join('') }
}

t.test('on a terminal, users add prompts twice on the prompt stream with echo off', async (t) => {
  const g = setup(t)
  const configPath = join(g.dir, 'config.yaml')
  const out: string[] = []
  const err: string[] = []
  const output = { out: (s: string) => { out.push(s) }, err: (s: string) => { err.push(s) } }

  const terminal = fakeTerminal()
  const prompts = capture()
  // Both lines at once, as a paste would arrive: the second must not be lost.
  terminal.write(`${PASSWORD}\r${PASSWORD}\r`)
  const code = await runCli(['users', 'add', 'carol', '-c', configPath], { output, stdin: terminal, prompts: prompts.stream, env: {} })
  t.equal(code, 0, err.join(''))
  t.equal(prompts.text(), 'New password for carol: \nRepeat the password: \n', 'prompts only: nothing typed is echoed')
  t.same(terminal.rawMode, [true, false], 'raw mode on while reading, off after')
  t.same(out, ['added user carol'])
  t.equal(await verifyPassword(PASSWORD, new UsersRepository(g.db()).find('carol')?.passwordHash ?? ''), true)

  const mismatch = fakeTerminal()
  mismatch.write(`${PASSWORD}\rsomething else entirely\r`)
  t.equal(await runCli(['users', 'add', 'dave', '-c', configPath], { output, stdin: mismatch, prompts: capture().stream, env: {} }), 1)
  t.equal(err.at(-1), 'gatehouse: the passwords did not match')

  const cancelled = fakeTerminal()
  cancelled.write('half a pass\x03')
  t.equal(await runCli(['users', 'add', 'erin', '-c', configPath], { output, stdin: cancelled, prompts: capture().stream, env: {} }), 1)
  t.equal(err.at(-1), 'gatehouse: cancelled')

  const ended = fakeTerminal()
  ended.end()
  t.equal(await runCli(['users', 'add', 'frank', '-c', configPath], { output, stdin: ended, prompts: capture().stream, env: {} }), 1)
  t.equal(err.at(-1), 'gatehouse: cancelled')

  t.same(new UsersRepository(g.db()).list().map((u) => u.username), ['carol'])
  t.notMatch(out.join('') + err.join(''), PASSWORD)
})
