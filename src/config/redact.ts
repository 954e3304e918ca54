import { ConfigSchema, isSecretSchema } from './schema.ts'
import type { TSchema } from '@sinclair/typebox'

/** The text `config show` prints in place of a secret. */
export const REDACTED = '[redacted]'

/**
 * A copy of a configuration with every value the schema marks `x-secret` replaced, overlays
 * included (they are read with the root schema).
 */
export function redactConfig (config: unknown): unknown {
  return redact(config, ConfigSchema, [])
}

function redact (value: unknown, schema: TSchema | undefined, path: string[]): unknown {
  if (schema !== undefined && isSecretSchema(schema) && value !== undefined) return REDACTED
  if (Array.isArray(value)) return value.map((v, i) => redact(v, (schema as { items?: TSchema } | undefined)?.items, [...path, String(i)]))
  if (value === null || typeof value !== 'object') return value
  const out: Record<string, unknown> = {}
  for (const [key, child] of Object.entries(value)) {
    // environments.<name> overlays have the whole file's shape.
    const childSchema = path.length === 1 && path[0] === 'environments'
      ? ConfigSchema
      : (schema as { properties?: Record<string, TSchema> } | undefined)?.properties?.[key]
    out[key] = redact(child, childSchema, [...path, key])
  }
  return out
}
