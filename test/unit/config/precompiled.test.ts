import t from 'tap'
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'
import type { ValidateFunction } from 'ajv'
import { parse } from 'yaml'
import { PRECOMPILED_SCHEMAS, standaloneValidatorSource } from '../../../src/config/standalone.ts'
import { compileValidator } from '../../../src/config/validate.ts'

// The shipped bundle validates configuration and policy files with Ajv standalone code made
// at build time; tests and `npm run dev` compile the same schemas at run time. Both must give
// the same problems, and fill the same defaults, for the same documents.

/** Loads standalone source as the bundle does: a CommonJS module requiring ajv's helpers. */
function load (source: string): ValidateFunction {
  const module = { exports: {} as unknown }
  const run = new Function('require', 'module', 'exports', source) as (r: NodeJS.Require, m: typeof module, e: unknown) => void
  run(createRequire(import.meta.url), module, module.exports)
  return module.exports as ValidateFunction
}

const key = 'ab'.repeat(32)
const minimal = { secrets: { encryption_keys: [key], cookie_keys: [key] }, upstream: { url: 'http://127.0.0.1:8080' }, keycloak: { issuer: 'https://sso.example.com/realms/acme', server: 'http://kc:8080', client_id: 'app' } }
const example = parse(readFileSync(new URL('../../../config.yaml', import.meta.url), 'utf8').replaceAll(/\$\{[A-Z_]+(:-([^}]*))?\}/g, (_m, _d, fallback: string | undefined) => fallback ?? key)) as Record<string, unknown>

const configs: Array<[string, unknown]> = [
  ['the minimal file', minimal],
  ['the example config.yaml', example],
  ['a wrong type deep down', { ...minimal, keycloak: { ...minimal.keycloak, timeout_ms: 'soon' } }],
  ['an unknown key near a known one', { ...minimal, sever: { port: 1 } }],
  ['an unknown key', { ...minimal, upstream: { url: 'http://a', colour: 'red' } }],
  ['a missing required key', { ...minimal, keycloak: { issuer: 'https://sso.example.com/realms/acme' } }],
  ['out of range and too short', { ...minimal, server: { port: 70000, host: '' } }],
  ['a union with no matching branch', { ...minimal, keycloak: { ...minimal.keycloak, client_auth_method: 'mutual_tls' } }],
  ['a secret of the wrong shape', { ...minimal, secrets: { encryption_keys: [], cookie_keys: [12] } }],
  ['not a mapping at all', ['server']]
]

const runtime = compileValidator(PRECOMPILED_SCHEMAS.config)
const standalone = compileValidator(PRECOMPILED_SCHEMAS.config, load(standaloneValidatorSource(PRECOMPILED_SCHEMAS.config)))

for (const [name, document] of configs) {
  t.test(`config: ${name}`, async (t) => {
    const a = structuredClone(document)
    const b = structuredClone(document)
    const problems = runtime(a)
    t.same(standalone(b), problems, 'the same problems')
    t.same(b, a, 'the same defaults filled in')
    if (name.startsWith('the ')) t.same(problems, [], 'a valid file')
    else t.ok(problems.length > 0, 'an invalid file')
  })
}

const policies: Array<[string, unknown]> = [
  ['an empty file', {}],
  ['the shipped policies/app.yaml', parse(readFileSync(new URL('../../../policies/app.yaml', import.meta.url), 'utf8'))],
  ['a rule with a misspelt key', { rules: [{ paths: ['/a'], alow: 'public' }] }],
  ['a lower-case method and a relative path', { rules: [{ paths: ['api'], methods: ['get'] }] }],
  ['an allow that is not one of the three', { rules: [{ paths: ['/a'], allow: 'everyone' }] }]
]

const runtimePolicy = compileValidator(PRECOMPILED_SCHEMAS.policy)
const standalonePolicy = compileValidator(PRECOMPILED_SCHEMAS.policy, load(standaloneValidatorSource(PRECOMPILED_SCHEMAS.policy)))

for (const [name, document] of policies) {
  t.test(`policy: ${name}`, async (t) => {
    const a = structuredClone(document)
    const b = structuredClone(document)
    const problems = runtimePolicy(a)
    t.same(standalonePolicy(b), problems, 'the same problems')
    t.same(b, a, 'the same defaults filled in')
    if (name.startsWith('a')) t.ok(problems.length > 0 || name === 'an empty file', 'problems where the file is wrong')
  })
}
