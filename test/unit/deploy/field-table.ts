/**
 * A small checker for configuration files whose program does not run here (Envoy, Traefik):
 * a table of the messages a file may use, each with its field names and their types, and a
 * walk that reports every key the table does not know and every value of the wrong kind.
 * A table is written from a named source (protocol-facts, a proto file at a commit), which
 * every finding names, so a reader can check the table itself.
 */

/**
 * A field's type:
 * - `string`, `bool`, `uint32`, `int`, `duration` (protobuf's JSON form: seconds with an `s`,
 *   `"3s"`, `"0.25s"`), `object` (an empty message, `{}`);
 * - `enum:A|B|C`: one of the names;
 * - the name of another message in the table;
 * - any of those followed by `[]`: a list of them;
 * - `map:<type>`: an object whose keys are free and whose values have that type;
 * - `any`: a `google.protobuf.Any` (`"@type"` names the message, looked up in the type URLs);
 * - `unchecked`: a real field whose content the table does not describe: using it is a
 *   finding, until its fields are added from the source.
 */
export type FieldType = string

/** One message: where its field names come from, and the fields. */
export interface MessageSpec {
  source: string
  fields: Readonly<Record<string, FieldType>>
}

/** The tables a walk reads. */
export interface FieldTables {
  messages: Readonly<Record<string, MessageSpec>>
  /** `google.protobuf.Any` type URLs to message names. */
  typeUrls?: Readonly<Record<string, string>>
}

/** Every problem in `value` read as `type`, one line each (`path: what is wrong (source)`). */
export function findingsOf (tables: FieldTables, value: unknown, type: FieldType, path = '$'): string[] {
  const out: string[] = []
  check(tables, value, type, path, out)
  return out
}

function check (tables: FieldTables, value: unknown, type: FieldType, path: string, out: string[]): void {
  if (type.endsWith('[]')) {
    if (!Array.isArray(value)) { out.push(`${path}: expected a list`); return }
    value.forEach((item, i) => { check(tables, item, type.slice(0, -2), `${path}[${i}]`, out) })
    return
  }
  if (type.startsWith('map:')) {
    if (!isObject(value)) { out.push(`${path}: expected a mapping`); return }
    for (const [key, item] of Object.entries(value)) check(tables, item, type.slice(4), `${path}.${key}`, out)
    return
  }
  if (type.startsWith('enum:')) {
    const names = type.slice(5).split('|')
    if (typeof value !== 'string' || !names.includes(value)) out.push(`${path}: ${JSON.stringify(value)} is not one of ${names.join(', ')}`)
    return
  }
  switch (type) {
    case 'string': if (typeof value !== 'string') out.push(`${path}: expected a string`); return
    case 'bool': if (typeof value !== 'boolean') out.push(`${path}: expected true or false`); return
    case 'uint32': if (!Number.isInteger(value) || (value as number) < 0) out.push(`${path}: expected a non-negative integer`); return
    case 'int': if (!Number.isInteger(value)) out.push(`${path}: expected an integer`); return
    case 'duration': if (typeof value !== 'string' || durationSeconds(value) === null) out.push(`${path}: expected a duration such as "3s"`); return
    case 'object': if (!isObject(value) || Object.keys(value).length > 0) out.push(`${path}: expected {}`); return
    case 'unchecked': out.push(`${path}: the table does not describe this field's content; add its fields from the source first`); return
    case 'any': {
      if (!isObject(value)) { out.push(`${path}: expected a typed config`); return }
      const url = value['@type']
      const name = typeof url === 'string' ? tables.typeUrls?.[url] : undefined
      if (name === undefined) { out.push(`${path}.@type: unknown type ${JSON.stringify(url)}`); return }
      checkMessage(tables, value, name, path, out, true)
      return
    }
  }
  checkMessage(tables, value, type, path, out, false)
}

function checkMessage (tables: FieldTables, value: unknown, name: string, path: string, out: string[], typed: boolean): void {
  const spec = tables.messages[name]
  if (spec === undefined) throw new TypeError(`the table has no message ${name} (at ${path})`)
  if (!isObject(value)) { out.push(`${path}: expected a ${name}`); return }
  for (const [key, item] of Object.entries(value)) {
    if (typed && key === '@type') continue
    const fieldType = spec.fields[key]
    if (fieldType === undefined) out.push(`${path}.${key}: not a field of ${name} (${spec.source})`)
    else check(tables, item, fieldType, `${path}.${key}`, out)
  }
}

/**
 * Seconds in a protobuf JSON duration (`"3s"`, `"0.25s"`: google/protobuf/duration.proto, "JSON
 * Mapping"), or null when the text is not one.
 */
export function durationSeconds (text: string): number | null {
  const match = /^(\d+(?:\.\d{1,9})?)s$/.exec(text)
  return match === null ? null : Number(match[1])
}

/** A plain mapping (not a list, not null). */
export function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
