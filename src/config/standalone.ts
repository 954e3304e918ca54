import { createRequire } from 'node:module'
import type { TSchema } from '@sinclair/typebox'
import { ConfigSchema } from './schema.ts'
import { PolicyFileSchema } from '../authz/policy.ts'
import type { PrecompiledName } from './precompiled.ts'
import { prepareSchema, schemaAjv } from './validate.ts'

// ajv's standalone entry is CommonJS with a `default` its types promise but Node's ESM interop
// does not give (the module itself is the function): required, as CommonJS.
const standaloneCode = createRequire(import.meta.url)('ajv/dist/standalone') as (typeof import('ajv/dist/standalone/index.js'))['default']

/**
 * The schemas the bundle precompiles, each with its source. Build-time only: the running
 * sidecar never imports this module (Ajv's code generator stays out of the bundle).
 */
export const PRECOMPILED_SCHEMAS: Record<PrecompiledName, TSchema> = { config: ConfigSchema, policy: PolicyFileSchema }

/**
 * Ajv standalone code for `schema`, compiled exactly as at run time: a CommonJS module whose
 * `module.exports` is the validate function (its runtime helpers are `require`d from ajv).
 */
export function standaloneValidatorSource (schema: TSchema): string {
  const ajv = schemaAjv({ code: { source: true } })
  const validate = ajv.compile(prepareSchema(schema))
  return standaloneCode(ajv, validate)
}
