/** Where a command writes: injectable so tests read what a person would see. */
export interface Output {
  out: (text: string) => void
  err: (text: string) => void
}

/** Standard output and error. The CLI is the one place `console`-style output is right. */
export const processOutput: Output = {
  out: (text) => { process.stdout.write(text.endsWith('\n') ? text : `${text}\n`) },
  err: (text) => { process.stderr.write(text.endsWith('\n') ? text : `${text}\n`) }
}

/** A column of {@link formatTable}: header and how to read the cell from a row. */
export interface Column<Row> {
  header: string
  value: (row: Row) => string | number | boolean | null
}

/** A plain-text table, columns padded to their widest cell. */
export function formatTable<Row> (rows: readonly Row[], columns: ReadonlyArray<Column<Row>>): string {
  const cells = rows.map((row) => columns.map((c) => { const v = c.value(row); return v === null ? '-' : String(v) }))
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => (r[i] ?? '').length)))
  const line = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(columns.map((c) => c.header.toUpperCase())), ...cells.map(line)].join('\n')
}

/** Prints `value` as JSON (with `--json`) or as `text()`. */
export function emit (output: Output, json: boolean, value: unknown, text: () => string): void {
  output.out(json ? JSON.stringify(value, null, 2) : text())
}
