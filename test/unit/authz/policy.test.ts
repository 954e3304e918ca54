import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { compilePattern, loadPolicies, matchRule, satisfies } from '../../../src/authz/policy.ts'
import { PolicyError } from '../../../src/errors.ts'

function policyDir (t: { testdir: () => string }, files: Record<string, string>): string {
  const dir = t.testdir()
  mkdirSync(dir, { recursive: true })
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

t.test('patterns: * within a segment, ** across any number of segments', async (t) => {
  const admin = compilePattern('/admin/**')
  t.ok(admin.test('/admin'))
  t.ok(admin.test('/admin/users/1'))
  t.notOk(admin.test('/administrator'))
  const item = compilePattern('/api/*/items')
  t.ok(item.test('/api/v1/items'))
  t.notOk(item.test('/api/v1/v2/items'))
  t.ok(compilePattern('/**').test('/'))
  t.ok(compilePattern('/').test('/'))
  t.notOk(compilePattern('/').test('/x'))
  t.ok(compilePattern('/files/*.pdf').test('/files/report.pdf'))
  t.notOk(compilePattern('/a.b').test('/aXb'), 'dots are literal')
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

t.test('a missing directory means no rules: the default decides', async (t) => {
  const policy = loadPolicies(join(t.testdir(), 'none'), 'deny')
  t.equal(policy.rules.length, 0)
  t.same(matchRule(policy, 'GET', '/x').requirement, { kind: 'deny' })
})

t.test('requirements', async (t) => {
  t.ok(satisfies({ kind: 'any_role', roles: ['a', 'b'] }, ['x', 'b']))
  t.notOk(satisfies({ kind: 'any_role', roles: ['a'] }, ['x']))
  t.notOk(satisfies({ kind: 'deny' }, ['admin']))
  t.ok(satisfies({ kind: 'authenticated' }, []))
})

t.test('every problem in every file is reported with file and rule path', async (t) => {
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
      'a.yaml: rules[0].paths[0]: a path pattern starting with / / string "admin"',
      'a.yaml: rules[1]: exactly one of allow (public, authenticated, deny) or roles / neither',
      'a.yaml: rules[2]: exactly one of allow (public, authenticated, deny) or roles / both',
      'b.yaml: rules[0].method: no such key (did you mean methods?) / an unknown key',
      'b.yaml: rules[0].allow: public, authenticated or deny / string "everyone"',
      'b.yaml: rules[0].paths[0]: a normalised path pattern (no //, ., .. or encoded unreserved characters) / "/a/../b"',
      'b.yaml: rules[0].paths[1]: a pattern where ** stands alone as a whole segment / "/c/x**"',
      'c.yaml (line 2): valid YAML / Flow sequence in block collection must be sufficiently indented and end with a ]'
    ])
  }
})

t.test('patterns must already be normalised and ** must stand alone', async (t) => {
  const dir = policyDir(t, { 'a.yaml': 'rules:\n  - paths: [/a/../b, /c/x**, //d, /%61]\n    allow: public\n' })
  const err = t.throws(() => loadPolicies(dir, 'authenticated')) as unknown as PolicyError
  t.same(err.problems.map((p) => p.path), ['a.yaml: rules[0].paths[0]', 'a.yaml: rules[0].paths[1]', 'a.yaml: rules[0].paths[2]', 'a.yaml: rules[0].paths[3]'])
})
