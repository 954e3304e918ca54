import type { TSchema } from '@sinclair/typebox'
import { ConfigSchema } from './schema.ts'

/**
 * The configuration reference (docs/configuration.md), generated from the schema so it
 * cannot drift: `npm run docs` writes it, and a test fails when the file is stale.
 */
export function configReference (): string {
  const rows: string[] = []
  walk(ConfigSchema, '', rows)
  return [
    '# Configuration reference',
    '',
    '<!-- Generated from src/config/schema.ts by `npm run docs`; do not edit by hand. -->',
    '',
    'One YAML file (`-c/--config`, `$GATEHOUSE_CONFIG`, or `./config.yaml`). Values may use `${VAR}`',
    'and `${VAR:-default}`; `$$` writes a literal `$`. `environments.{production,staging,development}`',
    'overlays are merged over the base when `GATEHOUSE_ENV` names one. Unknown keys and wrong types stop',
    'start-up with the key\'s full path (exit code 2). Secrets (marked below) are redacted by `config show`.',
    '',
    '| key | type | default | description |',
    '| --- | --- | --- | --- |',
    ...rows,
    ''
  ].join('\n')
}

function walk (schema: TSchema, path: string, rows: string[]): void {
  const node = schema as Record<string, unknown>
  const properties = node.properties as Record<string, TSchema> | undefined
  if (node.type === 'object' && properties !== undefined && Object.keys(properties).length > 0) {
    if (path !== '') rows.push(`| \`${path}\` | section | | ${cell(String(node.description ?? ''))} |`)
    for (const [key, child] of Object.entries(properties)) walk(child, path === '' ? key : `${path}.${key}`, rows)
    return
  }
  if (path === 'environments') {
    rows.push(`| \`${path}\` | section | | ${cell(String(node.description ?? ''))} |`)
    return
  }
  const secret = node['x-secret'] === true ? ' **Secret.**' : ''
  rows.push(`| \`${path}\` | ${typeName(node)} | ${defaultOf(node)} | ${cell(String(node.description ?? ''))}${secret} |`)
}

function typeName (node: Record<string, unknown>): string {
  if (typeof node['x-expected'] === 'string') return cell(node['x-expected'])
  if (node.type === 'array') return `list of ${typeName(node.items as Record<string, unknown>)}`
  if (Array.isArray(node.anyOf)) return (node.anyOf as Array<Record<string, unknown>>).map((b) => (b.const !== undefined ? `\`${String(b.const)}\`` : typeName(b))).join(' \\| ')
  return String(node.type ?? 'value')
}

function defaultOf (node: Record<string, unknown>): string {
  if (node.default === undefined) return node.description !== undefined && /Required\./.test(String(node.description)) ? '**required**' : ''
  return `\`${JSON.stringify(node.default)}\``
}

function cell (text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ')
}
