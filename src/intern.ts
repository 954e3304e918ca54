/*
 * Sharing of values that many cached identities hold alike. Ten thousand tokens of a few
 * hundred people carry a few dozen distinct role lists: kept once each rather than once per
 * token, the verifier's and the session cache's entries shrink to what is theirs alone
 * (issue 17's memory budget). Everything handed out is frozen, as it is shared.
 */

/**
 * A bounded table of shared values by key. When full it starts again empty: values already
 * handed out stay valid (they are only shared less), and a flood of distinct keys cannot grow
 * it without bound.
 */
export class Interner<T> {
  readonly #max: number
  #table = new Map<string, T>()

  constructor (max: number) {
    this.#max = max
  }

  /** The value shared under `key`, made by `make` the first time. */
  get (key: string, make: () => T): T {
    let value = this.#table.get(key)
    if (value === undefined) {
      if (this.#table.size >= this.#max) this.#table = new Map()
      value = make()
      this.#table.set(key, value)
    }
    return value
  }
}

// A separator no listed name may hold (claims.ts and policy.ts refuse control characters).
const SEPARATOR = '\u0000'
const EMPTY: readonly string[] = Object.freeze([])
const lists = new Interner<readonly string[]>(4096)

/** One shared, frozen copy of a list of names (roles, groups) per distinct content and order. */
export function internList (list: readonly string[]): readonly string[] {
  if (list.length === 0) return EMPTY
  return lists.get(list.join(SEPARATOR), () => Object.freeze([...list]))
}

const joined = new WeakMap<readonly string[], string>()

/**
 * `list.join(',')`, once per list object: interned lists are joined once however many
 * identities hold them, and the header values they make are one string too.
 */
export function joinedList (list: readonly string[]): string {
  let text = joined.get(list)
  if (text === undefined) {
    text = list.join(',')
    if (Object.isFrozen(list)) joined.set(list, text)
  }
  return text
}

const words = new Interner<string>(4096)

/** One shared copy of a short string many records repeat (an e-mail domain, an address). */
export function internString (text: string): string {
  return text.length > 256 ? text : words.get(text, () => text)
}

const headerSets = new Interner<Record<string, string>>(4096)

/**
 * One shared, frozen copy of a set of identity headers per distinct content: every token of
 * one person yields the same headers, and each remembered token held a copy. A set carrying
 * a long value (an access token the app is sent) is unique anyway, and is only frozen.
 */
export function internHeaders (headers: Record<string, string>): Readonly<Record<string, string>> {
  let key = ''
  for (const name in headers) {
    const value = headers[name] as string
    if (value.length > 256) return Object.freeze(headers)
    // Header values hold no control characters (identity-headers.ts removes them).
    key += `${name}\u0000${value}\u0001`
  }
  return headerSets.get(key, () => Object.freeze(headers))
}

/** {@link internString}, passing null through. */
export function internOrNull (text: string | null): string | null {
  return text === null ? null : internString(text)
}
