import t from 'tap'
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadPolicies, matchRule, type Requirement } from '../../../src/authz/policy.ts'
import { PolicyError } from '../../../src/errors.ts'

function policyDir (t: { testdir: () => string }, files: Record<string, string>): string {
  const dir = t.testdir()
  mkdirSync(dir, { recursive: true })
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

const anyRole = (...roles: string[]): Requirement => ({ kind: 'conditions', clauses: [{ kind: 'any_role', roles }] })
const eachOf = (...sets: string[][]): Requirement => ({ kind: 'conditions', clauses: sets.map((roles) => ({ kind: 'any_role' as const, roles })) })

t.test('patterns: * within a segment, ** across any number of segments, :name one segment', async (t) => {
  const rules = [
    ['/admin/**', 'admin'], ['/api/*/items', 'items'], ['/files/*.pdf', 'pdf'], ['/a.b', 'dot'], ['/users/:id', 'user'],
    ['/docs/**/edit', 'edit'], ['/', 'root']
  ]
  const policy = loadPolicies(policyDir(t, { 'a.yaml': `rules:\n${rules.map(([p, n]) => `  - { name: ${n}, path: ${p}, allow: deny }\n`).join('')}` }), 'public')
  const name = (path: string): string => matchRule(policy, 'GET', path).name
  t.equal(name('/admin'), 'admin', '** matches no segment too')
  t.equal(name('/admin/users/1'), 'admin')
  t.equal(name('/administrator'), 'default (public)')
  t.equal(name('/api/v1/items'), 'items')
  t.equal(name('/api/v1/v2/items'), 'default (public)', '* stays within one segment')
  t.equal(name('/files/report.pdf'), 'pdf')
  t.equal(name('/files/report.pdf.exe'), 'default (public)')
  t.equal(name('/aXb'), 'default (public)', 'dots are literal')
  t.equal(name('/users/42'), 'user')
  t.equal(name('/users/42/x'), 'default (public)', ':id is one segment')
  t.equal(name('/users'), 'default (public)', ':id is not an empty segment')
  t.equal(name('/docs/edit'), 'edit', '** in the middle matches none')
  t.equal(name('/docs/a/b/c/edit'), 'edit')
  t.equal(name('/docs/a/b/c/edit/x'), 'default (public)')
  t.equal(name('/'), 'root')
  t.equal(name('/x'), 'default (public)')
  const all = loadPolicies(policyDir(t, { 'a.yaml': 'rules:\n  - { paths: [/**], allow: deny }\n' }), 'public')
  t.equal(matchRule(all, 'GET', '/').name, 'a.yaml: rules[0]', '/** matches the root')
})

t.test('files are read in name order and the first matching rule wins', async (t) => {
  const dir = policyDir(t, {
    '20-app.yaml': 'rules:\n  - name: all admin\n    paths: [/admin/**]\n    roles: [admin]\n',
    '10-early.yaml': 'rules:\n  - name: admin health\n    paths: [/admin/health]\n    methods: [GET]\n    allow: public\n',
    'notes.txt': 'ignored'
  })
  const policy = loadPolicies(dir, 'authenticated')
  t.same(policy.files, ['10-early.yaml', '20-app.yaml'])
  t.equal(matchRule(policy, 'GET', '/admin/health').name, 'admin health')
  t.equal(matchRule(policy, 'HEAD', '/admin/health/').name, 'admin health', 'GET covers HEAD; trailing slash ignored')
  t.equal(matchRule(policy, 'POST', '/admin/health').name, 'all admin')
  t.equal(matchRule(policy, 'GET', '/elsewhere').name, 'default (authenticated)')
  t.same(matchRule(policy, 'GET', '/elsewhere').requirement, { kind: 'authenticated' })
})

t.test('a missing directory is an error naming it; an empty one is allowed with a warning', async (t) => {
  const missing = join(t.testdir(), 'none')
  t.throws(() => loadPolicies(missing, 'deny'), { code: 'ERR_POLICY_INVALID', message: `policy directory ${missing} does not exist (policies.dir)` })
  const file = join(policyDir(t, { 'a-file': 'x' }), 'a-file')
  t.throws(() => loadPolicies(file, 'deny'), { code: 'ERR_POLICY_INVALID', message: `policy directory ${file} is not a directory (policies.dir)` })

  const empty = policyDir(t, {})
  const policy = loadPolicies(empty, 'deny')
  t.equal(policy.rules.length, 0)
  t.equal(policy.dir, empty)
  t.same(policy.warnings, ['no policy rules (no .yaml or .yml files): every route requires policies.default (deny)'])
  t.same(matchRule(policy, 'GET', '/x').requirement, { kind: 'deny' })

  const noRules = loadPolicies(policyDir(t, { 'a.yaml': 'rules: []\n' }), 'authenticated')
  t.same(noRules.warnings, ['no policy rules: every route requires policies.default (authenticated)'])
  const some = loadPolicies(policyDir(t, { 'a.yaml': 'rules:\n  - paths: [/x]\n    allow: public\n' }), 'authenticated')
  t.same(some.warnings, [])
})

t.test('a listed file that cannot be read fails the whole set, never loads it without that file', async (t) => {
  const dir = policyDir(t, { 'a.yaml': 'rules:\n  - { path: /admin/**, allow: deny }\n', 'b.yaml': 'rules: []\n' })
  // What a reload sees when a file goes between the listing and the read: ENOENT.
  symlinkSync(join(dir, 'gone.yaml'), join(dir, 'c.yaml'))
  t.throws(() => loadPolicies(dir, 'public'), { code: 'ERR_POLICY_INVALID', message: `policy file ${join(dir, 'c.yaml')} disappeared while being read (saved, deleted, or a dangling symlink); the set is not loaded without it` })
  mkdirSync(join(dir, 'd.yaml'))
  rmSync(join(dir, 'c.yaml'))
  t.same(loadPolicies(dir, 'public').files, ['a.yaml', 'b.yaml'], 'a directory named like a policy file is not one')
})

const APP_RULES = {
  'app.yaml': `rules:
  - name: health
    paths: [/healthz]
    allow: public
  - name: admin area
    paths: [/admin/**]
    roles: [admin]
  - name: internals
    paths: [/actuator/**, /.git/**]
    allow: deny
`
}

t.test('restricting rules match every case spelling; public rules only their own', async (t) => {
  const policy = loadPolicies(policyDir(t, APP_RULES), 'authenticated')
  for (const path of ['/ADMIN', '/Admin/users', '/aDmIn/x/y']) {
    t.same(matchRule(policy, 'GET', path).requirement, anyRole('admin'), path)
  }
  for (const path of ['/Actuator/env', '/ACTUATOR', '/.GIT/config', '/.Git']) {
    t.same(matchRule(policy, 'GET', path).requirement, { kind: 'deny' }, path)
  }
  t.same(matchRule(policy, 'GET', '/healthz').requirement, { kind: 'public' })
  t.same(matchRule(policy, 'GET', '/HEALTHZ').requirement, { kind: 'authenticated' }, 'a public rule never widens to another spelling')
  t.equal(matchRule(policy, 'GET', '/ADMIN/x').name, 'default (authenticated) + admin area (other case)', 'the log names every rule that applied')
})

t.test('exact spellings decide as before: first match wins, and the usual request allocates no new rule', async (t) => {
  const policy = loadPolicies(policyDir(t, APP_RULES), 'authenticated')
  t.equal(matchRule(policy, 'GET', '/admin/x'), policy.rules[1], 'the rule object itself')
  t.equal(matchRule(policy, 'GET', '/elsewhere'), policy.fallback)
  t.equal(matchRule(policy, 'GET', '/healthz'), policy.rules[0])
})

t.test('order cannot be used to escape a rule by changing case', async (t) => {
  // A public exception spelled as the rule it is carved out of keeps its exact spelling only.
  const carved = loadPolicies(policyDir(t, {
    'a.yaml': 'rules:\n  - paths: [/admin/health]\n    allow: public\n  - paths: [/admin/**]\n    roles: [admin]\n'
  }), 'authenticated')
  t.same(matchRule(carved, 'GET', '/admin/health').requirement, { kind: 'public' })
  t.same(matchRule(carved, 'GET', '/Admin/Health').requirement, anyRole('admin'))

  // A public exception written in another spelling than the restricting rule: it is a spelling
  // of a path the rule covers, so it needs the role too (it was public before: stricter now).
  const exception = loadPolicies(policyDir(t, {
    'a.yaml': 'rules:\n  - name: admin health\n    paths: [/Admin/health]\n    allow: public\n  - name: admin area\n    paths: [/admin/**]\n    roles: [admin]\n'
  }), 'authenticated')
  for (const path of ['/Admin/health', '/admin/health', '/ADMIN/health', '/admin/HEALTH', '/ADMIN/x', '/Admin/x']) {
    t.same(matchRule(exception, 'GET', path).requirement, anyRole('admin'), path)
  }

  // A restricting rule in another spelling before a public one: the public rule cannot exempt a spelling of it.
  const before = loadPolicies(policyDir(t, {
    'a.yaml': 'rules:\n  - paths: [/Admin/**]\n    roles: [admin]\n  - paths: [/admin/health]\n    allow: public\n'
  }), 'public')
  t.same(matchRule(before, 'GET', '/admin/health').requirement, anyRole('admin'))

  // A weaker rule in one spelling before a stricter one in another: the stricter still applies
  // to its own spelling and to every other one.
  const shadow = loadPolicies(policyDir(t, {
    'a.yaml': 'rules:\n  - paths: [/Reports/**]\n    allow: authenticated\n  - paths: [/reports/secret]\n    allow: deny\n'
  }), 'public')
  for (const path of ['/reports/secret', '/Reports/secret', '/REPORTS/SECRET']) {
    t.same(matchRule(shadow, 'GET', path).requirement, { kind: 'deny' }, path)
  }
  t.same(matchRule(shadow, 'GET', '/reports/other').requirement, { kind: 'authenticated' })
  t.same(matchRule(shadow, 'GET', '/Reports/other').requirement, { kind: 'authenticated' })

  // Two role rules, a specific one first: its exact spelling needs only its roles, as today;
  // other spellings, which each rule covers in some spelling, need a role of each.
  const roles = loadPolicies(policyDir(t, {
    'a.yaml': 'rules:\n  - paths: [/admin/health]\n    roles: [ops]\n  - paths: [/admin/**]\n    roles: [admin]\n'
  }), 'authenticated')
  t.same(matchRule(roles, 'GET', '/admin/health').requirement, anyRole('ops'))
  t.same(matchRule(roles, 'GET', '/admin/other').requirement, anyRole('admin'))
  t.same(matchRule(roles, 'GET', '/ADMIN/HEALTH').requirement, eachOf(['ops'], ['admin']))
  t.same(matchRule(roles, 'GET', '/admin/HEALTH').requirement, eachOf(['admin'], ['ops']))
})

t.test('case folding respects methods and patterns with wildcards', async (t) => {
  const policy = loadPolicies(policyDir(t, {
    'a.yaml': 'rules:\n  - paths: [/api/*/Items]\n    methods: [DELETE]\n    allow: deny\n'
  }), 'authenticated')
  t.same(matchRule(policy, 'DELETE', '/API/v1/items').requirement, { kind: 'deny' })
  t.same(matchRule(policy, 'GET', '/API/v1/items').requirement, { kind: 'authenticated' }, 'another method')
  t.same(matchRule(policy, 'DELETE', '/api/v1/v2/items').requirement, { kind: 'authenticated' }, '* stays within one segment')
  const raw = loadPolicies(policyDir(t, { 'a.yaml': 'rules:\n  - paths: [/café/**]\n    allow: deny\n' }), 'public')
  t.same(matchRule(raw, 'GET', '/cafÉ/x').requirement, { kind: 'deny' }, 'letters outside ASCII fold as the i flag folds them')
  const long = loadPolicies(policyDir(t, { 'a.yaml': 'rules:\n  - paths: [/Admin/**]\n    allow: deny\n' }), 'public')
  t.same(matchRule(long, 'GET', '/aDMIN/x').requirement, { kind: 'deny' })
  t.equal(matchRule(long, 'GET', '/aDMIN/x').name, 'default (public) + a.yaml: rules[0] (other case)')
  const dotless = loadPolicies(policyDir(t, { 'a.yaml': 'rules:\n  - paths: [/s/**]\n    allow: deny\n' }), 'public')
  t.same(matchRule(dotless, 'GET', '/\u017f/x').requirement, { kind: 'public' }, 'ſ does not fold onto s')
})

t.test('every problem in every file is reported with file, line and rule path', async (t) => {
  const dir = policyDir(t, {
    'a.yaml': 'rules:\n  - paths: [admin]\n    allow: public\n  - paths: [/x]\n  - paths: [/y]\n    allow: public\n    roles: [r]\n',
    'b.yaml': 'rules:\n  - paths: [/a/../b, /c/x**]\n    allow: everyone\n    method: [GET]\n',
    'c.yaml': 'rules: [\n'
  })
  try {
    loadPolicies(dir, 'authenticated')
    t.fail('expected a PolicyError')
  } catch (err) {
    t.ok(err instanceof PolicyError)
    const lines = (err as PolicyError).problems.map((p) => `${p.path}: ${p.expected} / ${p.received}`)
    t.same(lines, [
      'a.yaml (line 2): rules[0].paths[0]: a path pattern starting with / / string "admin"',
      'a.yaml (line 4): rules[1]: exactly one of allow (public, authenticated, deny) or requirements (roles, any_roles, all_roles, permissions, groups, emails, email_domains) / neither',
      'a.yaml (line 5): rules[2]: exactly one of allow (public, authenticated, deny) or requirements (roles, any_roles, all_roles, permissions, groups, emails, email_domains) / both (allow and roles)',
      'b.yaml (line 4): rules[0].method: no such key (did you mean methods?) / an unknown key',
      'b.yaml (line 3): rules[0].allow: public, authenticated or deny / string "everyone"',
      'b.yaml (line 2): rules[0].paths[0]: a normalised path pattern (no //, ., .. or encoded unreserved characters) / "/a/../b"',
      'b.yaml (line 2): rules[0].paths[1]: a pattern where ** stands alone as a whole segment / "/c/x**"',
      'c.yaml (line 2): valid YAML / Flow sequence in block collection must be sufficiently indented and end with a ]'
    ])
    t.match((err as PolicyError).message, /^invalid policies in .*:\n {2}a\.yaml \(line 2\): rules\[0\]\.paths\[0\]: expected a path pattern starting with \/, received string "admin"\n/)
  }
})

t.test('patterns must already be normalised and ** must stand alone', async (t) => {
  const dir = policyDir(t, { 'a.yaml': 'rules:\n  - paths: [/a/../b, /c/x**, //d, /%61]\n    allow: public\n' })
  const err = t.throws(() => loadPolicies(dir, 'authenticated')) as unknown as PolicyError
  t.same(err.problems.map((p) => p.path), ['a.yaml (line 2): rules[0].paths[0]', 'a.yaml (line 2): rules[0].paths[1]', 'a.yaml (line 2): rules[0].paths[2]', 'a.yaml (line 2): rules[0].paths[3]'])
})

t.test('the policy version: the same files give the same version anywhere; any change to a name or a text changes it', async (t) => {
  const rules = 'rules:\n  - paths: [/public/**]\n    allow: public\n'
  const a = loadPolicies(policyDir(t, { 'app.yaml': rules, 'notes.txt': 'not read' }), 'authenticated').version
  t.match(a, /^[0-9a-f]{12}$/)
  t.equal(loadPolicies(policyDir(t, { 'app.yaml': rules }), 'deny').version, a, 'another directory with the same files (notes.txt is not a policy, the default is config)')
  t.not(loadPolicies(policyDir(t, { 'app.yaml': rules.replace('public/**', 'public/*') }), 'authenticated').version, a, 'a changed rule')
  t.not(loadPolicies(policyDir(t, { 'other.yaml': rules }), 'authenticated').version, a, 'a renamed file (the order rules are read in may change)')
  // The two directories' files joined are the same text; only where one file ends differs.
  t.not(loadPolicies(policyDir(t, { 'a.yaml': `${rules}# end\n`, 'b.yaml': rules }), 'authenticated').version,
    loadPolicies(policyDir(t, { 'a.yaml': rules, 'b.yaml': `# end\n${rules}` }), 'authenticated').version, 'text moved from one file to the next')
})
