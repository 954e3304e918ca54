/*
 * The route matcher (issue 13 item 6): every rule's path patterns compiled once into a trie of
 * path segments, so that finding the rule for a request costs about the same with 500 rules as
 * with 5. The trie answers exactly what trying the rules one by one in file order would: the
 * first rule (lowest index) whose method, host and pattern match. It is not a router in
 * find-my-way's sense, which ranks static routes above parametric ones and keeps one route per
 * path; here order alone decides, as it always has in policy files.
 *
 * A pattern is a list of segments (`/api/:id/*.json/**`):
 *   - a literal (`api`), compared exactly (or, in the folded trie, ignoring case);
 *   - `:name`, one whole non-empty segment;
 *   - `*`, one whole segment (empty included, so `/*` matches `/`, as the old expressions did);
 *   - a segment with `*` inside (`*.json`, `v*`), where each `*` matches within the segment;
 *   - `**`, any number of whole segments, none included (`/admin/**` covers `/admin`).
 * Paths are walked as segments of their match form (normalised, no trailing slash), `/` being
 * one empty segment. Each node keeps the least rule index below it, so a walk stops exploring
 * a branch that cannot beat the best match found so far; with first-match order that is what
 * keeps wildcard-heavy rule sets cheap.
 */

/** Whether a rule matches a request's method and host, besides its path. */
export interface TrieEntry {
  /** The rule's place in file order: lower wins. */
  index: number
  /** Upper-case methods, or null for every method. GET covers HEAD. */
  methods: ReadonlySet<string> | null
  /** Host names, or null for every host (see {@link HostMatcher}). */
  hosts: HostMatcher | null
}

/** Host names a rule is limited to: exact names and `*.suffix` wildcards (one label). */
export interface HostMatcher {
  exact: ReadonlySet<string>
  /** `.example.com` for `*.example.com`. */
  suffixes: readonly string[]
}

interface Node {
  id: number
  literals: Map<string, Node> | null
  param: Node | null
  star: Node | null
  globs: Array<{ source: string, test: (segment: string) => boolean, node: Node }> | null
  rest: Node | null
  /** Whether a `**` comes before this node in its patterns: only then can a walk reach it at several positions. */
  nested: boolean
  /** Rules whose pattern ends at this node, by index. */
  ends: TrieEntry[]
  /** The least index of any rule ending at or below this node. */
  min: number
}

const PARAM = /^:[A-Za-z_][A-Za-z0-9_]*$/


/**
 * `text` with every character replaced by its case-folded form as the `i` flag of a regular
 * expression without `u` folds it (ECMA-262 Canonicalize): its upper case when that is one
 * code unit and does not map a character outside ASCII onto one inside it (`ſ` stays `ſ`).
 */
export function foldCase (text: string): string {
  let out = ''
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string
    const upper = ch.toUpperCase()
    out += upper.length !== 1 || (ch.charCodeAt(0) >= 0x80 && upper.charCodeAt(0) < 0x80) ? ch : upper
  }
  return out
}

/** Whether a segment of a pattern is a `:name` parameter. */
export function isParamSegment (segment: string): boolean {
  return PARAM.test(segment)
}

/**
 * A segment trie of path patterns. Built with {@link add}, then read with {@link first} (the
 * usual request) or {@link all}. Reading keeps its state on the instance: the walks are
 * synchronous, so no two ever overlap.
 */
export class RouteTrie {
  #ids = 0
  readonly #root = this.#node()
  readonly #ignoreCase: boolean
  #best = Number.POSITIVE_INFINITY
  #method = ''
  #host: string | null = null
  #found: number[] | null = null
  #visited: Set<number> | null = null

  /** With `ignoreCase`, literals and globs match whatever the case of ASCII letters (see {@link foldCase}). */
  constructor (options: { ignoreCase?: boolean } = {}) {
    this.#ignoreCase = options.ignoreCase === true
  }

  #node (): Node {
    return { id: this.#ids++, literals: null, param: null, star: null, globs: null, rest: null, nested: false, ends: [], min: Number.POSITIVE_INFINITY }
  }

  /** Adds one pattern (already in match form, segments after the leading `/`) of a rule. */
  add (segments: readonly string[], entry: TrieEntry): void {
    let at = this.#root
    const path: Node[] = [at]
    let afterRest = false
    for (const segment of segments) {
      at = this.#child(at, segment)
      if (afterRest) at.nested = true
      if (segment === '**') afterRest = true
      path.push(at)
    }
    // Kept in index order, so a walk can stop at the first entry that fits.
    at.ends.push(entry)
    at.ends.sort((a, b) => a.index - b.index)
    for (const n of path) n.min = Math.min(n.min, entry.index)
  }

  #child (at: Node, segment: string): Node {
    if (segment === '**') return (at.rest ??= this.#node())
    if (segment === '*') return (at.star ??= this.#node())
    if (PARAM.test(segment)) return (at.param ??= this.#node())
    if (segment.includes('*')) {
      const source = `^${segment.split('*').map(escapeRegExp).join('[^/]*')}$`
      at.globs ??= []
      const known = at.globs.find((g) => g.source === source)
      if (known !== undefined) return known.node
      const created = this.#node()
      at.globs.push({ source, test: globTest(segment, this.#ignoreCase), node: created })
      return created
    }
    const key = this.#ignoreCase ? foldCase(segment) : segment
    at.literals ??= new Map()
    let next = at.literals.get(key)
    if (next === undefined) {
      next = this.#node()
      at.literals.set(key, next)
    }
    return next
  }

  /**
   * The least index of a rule matching `method` (upper-case), `host` (normalised, or null
   * when the request named none) and the match-form `path`, or -1 when none does.
   */
  first (method: string, host: string | null, path: string): number {
    this.#best = Number.POSITIVE_INFINITY
    this.#method = method
    this.#host = host
    this.#found = null
    this.#visited = null
    this.#walk(this.#root, path, 0)
    return this.#best === Number.POSITIVE_INFINITY ? -1 : this.#best
  }

  /** Every index of a rule matching, ascending and without repeats (as {@link first}). */
  all (method: string, host: string | null, path: string): number[] {
    this.#best = Number.POSITIVE_INFINITY
    this.#method = method
    this.#host = host
    const found: number[] = []
    this.#found = found
    this.#visited = null
    this.#walk(this.#root, path, 0)
    this.#found = null
    return [...new Set(found)].sort((a, b) => a - b)
  }

  // `pos` is the index of the `/` before the next segment, or the path's length when none is left.
  #walk (at: Node, path: string, pos: number): void {
    if (this.#found === null && at.min >= this.#best) return
    if (pos >= path.length) {
      this.#take(at.ends)
    } else {
      let end = path.indexOf('/', pos + 1)
      if (end === -1) end = path.length
      const segment = path.slice(pos + 1, end)
      if (at.literals !== null) {
        const next = at.literals.get(this.#ignoreCase ? foldCase(segment) : segment)
        if (next !== undefined) this.#walk(next, path, end)
      }
      if (at.param !== null && segment !== '') this.#walk(at.param, path, end)
      if (at.star !== null) this.#walk(at.star, path, end)
      if (at.globs !== null) {
        for (const glob of at.globs) if (glob.test(segment)) this.#walk(glob.node, path, end)
      }
    }
    if (at.rest !== null) {
      const rest = at.rest
      // A `**` that ends its pattern matches whatever is left, none included.
      this.#take(rest.ends)
      if (hasChildren(rest)) {
        // What follows a `**` may start at every later segment boundary.
        let p = pos
        for (;;) {
          if (!rest.nested) {
            this.#walk(rest, path, p)
          } else {
            // Below another `**`, the same (node, boundary) is reached once per way of splitting
            // the path before it: walked once per request, or a long path with several `**`
            // costs what a backtracking expression does. Only such nodes pay for the memo.
            const key = rest.id * (path.length + 1) + p
            this.#visited ??= new Set()
            if (!this.#visited.has(key)) {
              this.#visited.add(key)
              this.#walk(rest, path, p)
            }
          }
          if (p >= path.length) break
          const next = path.indexOf('/', p + 1)
          p = next === -1 ? path.length : next
        }
      }
    }
  }

  #take (ends: readonly TrieEntry[]): void {
    for (const entry of ends) {
      if (this.#found === null && entry.index >= this.#best) return
      if (!methodMatches(entry.methods, this.#method) || !hostMatches(entry.hosts, this.#host)) continue
      if (this.#found !== null) {
        this.#found.push(entry.index)
        continue
      }
      this.#best = entry.index
      return
    }
  }
}

function hasChildren (n: Node): boolean {
  return n.literals !== null || n.param !== null || n.star !== null || n.globs !== null || n.rest !== null
}

function methodMatches (methods: ReadonlySet<string> | null, method: string): boolean {
  return methods === null || methods.has(method) || (method === 'HEAD' && methods.has('GET'))
}

function hostMatches (hosts: HostMatcher | null, host: string | null): boolean {
  if (hosts === null) return true
  if (host === null) return false
  if (hosts.exact.has(host)) return true
  for (const suffix of hosts.suffixes) {
    // One label before the suffix: `*.example.com` is `a.example.com`, not `a.b.example.com`
    // (RFC 6125 §6.4.3, as certificates read wildcards).
    if (host.length > suffix.length && host.endsWith(suffix) && !host.slice(0, host.length - suffix.length).includes('.')) return true
  }
  return false
}

/**
 * The host a request names, as rules compare it: lower-case, without the port and without a
 * trailing dot (`App.Example.com.:8443` → `app.example.com`); an IPv6 literal keeps its
 * brackets. Null when there is none.
 */
export function normaliseHost (value: string | undefined): string | null {
  if (value === undefined || value === '') return null
  let host = value.trim().toLowerCase()
  if (host.startsWith('[')) {
    const close = host.indexOf(']')
    return close === -1 ? null : host.slice(0, close + 1)
  }
  const colon = host.indexOf(':')
  if (colon !== -1) host = host.slice(0, colon)
  if (host.endsWith('.')) host = host.slice(0, -1)
  return host === '' ? null : host
}

// A segment with `*` inside as a test. One `*` (`*.php`, `v*`, `a*z`), spelt exactly, is a
// prefix and suffix comparison; anything else a regular expression, compiled here once.
function globTest (segment: string, ignoreCase: boolean): (segment: string) => boolean {
  const parts = segment.split('*')
  if (parts.length === 2 && !ignoreCase) {
    const [prefix, suffix] = parts as [string, string]
    const least = prefix.length + suffix.length
    return (s) => s.length >= least && s.startsWith(prefix) && s.endsWith(suffix)
  }
  const re = new RegExp(`^${parts.map(escapeRegExp).join('[^/]*')}$`, ignoreCase ? 'i' : '')
  return (s) => re.test(s)
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
