import t from 'tap'
import { stringify } from 'yaml'
import { compilePolicies, matchRule, type PolicyRule, type Requirement } from '../../../src/authz/policy.ts'
import { foldCase, normaliseHost, RouteTrie } from '../../../src/authz/route-trie.ts'

// The trie must give exactly the answer of trying the rules one by one, in order, with one
// regular expression per pattern (how the first-cut policies matched). The oracle below is
// that algorithm, written out again; random rule sets and paths are asked of both.

/** A pattern as the first-cut matcher compiled it (`:name` added: one non-empty segment). */
function oracleRegExp (pattern: string, ignoreCase: boolean): RegExp {
  const form = pattern.length > 1 && pattern.endsWith('/') ? pattern.slice(0, -1) : pattern
  let source = ''
  for (const segment of form.split('/').slice(1)) {
    if (segment === '**') {
      // `[^]` rather than `.`: a segment may hold any character (the old `.` missed U+2028).
      source += '(?:/[^]*)?'
      continue
    }
    if (/^:[A-Za-z_]\w*$/.test(segment)) {
      source += '/[^/]+'
      continue
    }
    source += '/' + segment.split('*').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*')
  }
  return new RegExp(`^${source === '' ? '/' : source}$`, ignoreCase ? 'i' : '')
}

interface OracleRule { name: string, requirement: Requirement, methods: Set<string> | null, exact: RegExp[], folded: RegExp[] | null }

function both (a: Requirement, b: Requirement): Requirement {
  if (a.kind === 'deny' || b.kind === 'deny') return { kind: 'deny' }
  if (a.kind === 'public' || a.kind === 'authenticated') return b.kind === 'public' ? a : b
  if (b.kind === 'public' || b.kind === 'authenticated') return a
  return { kind: 'conditions', clauses: [...a.clauses, ...b.clauses] }
}

/** The first-cut matchRule: a linear scan, exact spellings first-match, other spellings combined. */
function oracle (rules: OracleRule[], fallback: OracleRule, method: string, path: string): { name: string, requirement: Requirement } {
  const form = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path
  let exact: OracleRule | null = null
  const folded: OracleRule[] = []
  for (const rule of rules) {
    if (rule.methods !== null && !rule.methods.has(method) && !(method === 'HEAD' && rule.methods.has('GET'))) continue
    if (rule.folded === null) {
      if (exact === null && rule.exact.some((re) => re.test(form))) exact = rule
      continue
    }
    if (!rule.folded.some((re) => re.test(form))) continue
    if (rule.exact.some((re) => re.test(form))) {
      exact ??= rule
      continue
    }
    folded.push(rule)
  }
  const decided = exact ?? fallback
  if (folded.length === 0) return { name: decided.name, requirement: decided.requirement }
  let requirement = decided.requirement
  for (const rule of folded) requirement = both(requirement, rule.requirement)
  return { name: [decided.name, ...folded.map((r) => `${r.name} (other case)`)].join(' + '), requirement }
}

// mulberry32: a small seeded generator, so a failure can be replayed.
function random (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const PATTERN_SEGMENTS = ['admin', 'Admin', 'api', 'v1', 'x', 'users', ':id', '*', '**', '*.json', 'v*', 'A*', 'caf%C3%A9', 'é']
const PATH_SEGMENTS = ['admin', 'ADMIN', 'aDmin', 'api', 'API', 'v1', 'V1', 'x', 'X', 'users', '42', 'a.json', 'A.JSON', 'v2', 'Ab', 'caf%C3%A9', 'É', 'é', '\u2028']
const METHODS = ['GET', 'HEAD', 'POST', 'DELETE']

t.test('the trie answers exactly as trying the rules in order, exact spellings and other spellings alike', async (t) => {
  const seed = 20_240_613
  const next = random(seed)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T
  let compared = 0
  let mismatches = 0
  for (let set = 0; set < 150; set++) {
    const count = 1 + Math.floor(next() * 12)
    const specs: Array<Record<string, unknown>> = []
    const oracleRules: OracleRule[] = []
    for (let i = 0; i < count; i++) {
      const patterns: string[] = []
      for (let p = 0, n = 1 + Math.floor(next() * 2); p < n; p++) {
        const segments = Array.from({ length: Math.floor(next() * 4) }, () => pick(PATTERN_SEGMENTS))
        patterns.push(`/${segments.join('/')}`)
      }
      const methods = next() < 0.4 ? [pick(['GET', 'POST', 'DELETE'])] : null
      const kind = pick(['public', 'authenticated', 'deny', 'roles'])
      const name = `r${i}`
      const spec: Record<string, unknown> = { name, paths: patterns, ...(methods !== null ? { methods } : {}) }
      let requirement: Requirement
      if (kind === 'roles') {
        spec.roles = [name]
        requirement = { kind: 'conditions', clauses: [{ kind: 'any_role', roles: [name] }] }
      } else {
        spec.allow = kind
        requirement = { kind: kind as 'public' | 'authenticated' | 'deny' }
      }
      specs.push(spec)
      oracleRules.push({
        name,
        requirement,
        methods: methods === null ? null : new Set(methods),
        exact: patterns.map((p) => oracleRegExp(p, false)),
        folded: kind === 'public' ? null : patterns.map((p) => oracleRegExp(p, true))
      })
    }
    const policy = compilePolicies([{ file: 'a.yaml', text: stringify({ rules: specs }) }], '/policies', 'authenticated')
    const fallback: OracleRule = { name: 'default (authenticated)', requirement: { kind: 'authenticated' }, methods: null, exact: [], folded: null }
    for (let q = 0; q < 40; q++) {
      const path = `/${Array.from({ length: Math.floor(next() * 5) }, () => pick(PATH_SEGMENTS)).join('/')}`
      const method = pick(METHODS)
      const got: PolicyRule = matchRule(policy, method, path)
      const want = oracle(oracleRules, fallback, method, path)
      compared++
      if (got.name !== want.name || JSON.stringify(got.requirement) !== JSON.stringify(want.requirement)) {
        mismatches++
        if (mismatches <= 5) t.fail(`set ${set}: ${method} ${JSON.stringify(path)}: trie ${got.name} ${JSON.stringify(got.requirement)}, in order ${want.name} ${JSON.stringify(want.requirement)}; rules ${JSON.stringify(specs)}`)
      }
    }
  }
  t.equal(mismatches, 0, `${compared} requests asked of both (seed ${seed})`)
})

t.test('a rule ends the walk early only where no lower-indexed rule could still match', async (t) => {
  const trie = new RouteTrie()
  trie.add(['**'], { index: 5, methods: null, hosts: null })
  trie.add(['a', 'b'], { index: 1, methods: new Set(['POST']), hosts: null })
  trie.add(['a', '*'], { index: 3, methods: null, hosts: null })
  t.equal(trie.first('GET', null, '/a/b'), 3, 'the POST-only rule is skipped for GET')
  t.equal(trie.first('POST', null, '/a/b'), 1)
  t.same(trie.all('POST', null, '/a/b'), [1, 3, 5])
  t.equal(trie.first('GET', null, '/zzz'), 5)
  t.equal(new RouteTrie().first('GET', null, '/'), -1, 'no rule: -1')
})

t.test('several ** in a pattern cost one walk per boundary, not one per way of splitting the path', async (t) => {
  const trie = new RouteTrie()
  trie.add(['**', 'a', '**', 'b', '**', 'c'], { index: 0, methods: null, hosts: null })
  // 4000 segments of `x`: a backtracking matcher would try every split (about 10^10 of them).
  const long = '/x'.repeat(4000)
  t.equal(trie.first('GET', null, long), -1)
  t.equal(trie.first('GET', null, `${long}/a${long}/b${long}/c`), 0)
  t.equal(trie.first('GET', null, `/a/b/c`), 0)
  t.equal(trie.first('GET', null, `/a/c/b`), -1)
})

t.test('hosts: exact names and one-label wildcards, compared without port, case or trailing dot', async (t) => {
  const trie = new RouteTrie()
  trie.add(['**'], { index: 0, methods: null, hosts: { exact: new Set(['app.example.com']), suffixes: ['.example.org'] } })
  for (const host of ['app.example.com', 'APP.Example.com:8443', 'app.example.com.', 'a.example.org', 'B.EXAMPLE.ORG:80']) {
    t.equal(trie.first('GET', normaliseHost(host), '/x'), 0, host)
  }
  for (const host of ['example.com', 'x.app.example.com', 'example.org', 'a.b.example.org', 'evil-example.org', undefined, '']) {
    t.equal(trie.first('GET', normaliseHost(host), '/x'), -1, String(host))
  }
  t.equal(normaliseHost('[::1]:4180'), '[::1]')
  t.equal(normaliseHost('[::1'), null)
})

t.test('case folding is the i flag\'s without u', async (t) => {
  t.equal(foldCase('aDmIn'), 'ADMIN')
  t.equal(foldCase('café'), 'CAFÉ')
  t.equal(foldCase('\u017f'), '\u017f', 'ſ is not folded onto S')
  t.equal(foldCase('\u0131'), '\u0131', 'dotless ı is not folded onto I')
  t.equal(foldCase('ß'), 'ß', 'ß, whose upper case is two letters, stays')
})
