import type { ValidateFunction } from 'ajv'

/**
 * Schema validators compiled ahead of time, by name. Empty in the sources: the bundle that
 * `npm run build` ships (scripts/bundle.mjs) replaces this module with Ajv's standalone code
 * for each schema, because compiling the configuration schema alone costs a start-up 100 to
 * 400 ms. Run from source (tests, `npm run dev`), validators are compiled on first use, with
 * the same options (`test/unit/config/precompiled.test.ts` holds the two to the same answers).
 */
export const precompiled: Partial<Record<PrecompiledName, ValidateFunction>> = {}

/** The schemas the bundle precompiles. */
export type PrecompiledName = 'config' | 'policy'
