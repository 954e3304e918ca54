import t from 'tap'
import { readFileSync } from 'node:fs'
import { configReference } from '../../../src/config/reference.ts'

t.test('docs/configuration.md is the reference the schema generates (run `npm run docs`)', async (t) => {
  const onDisk = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8')
  t.equal(onDisk, configReference())
})

t.test('every key in config.yaml is in the reference, and the reference lists every key', async (t) => {
  const reference = configReference()
  const keys = [...reference.matchAll(/^\| `([a-z_.]+)` \| (?!section)/gm)].map((m) => m[1] as string)
  t.ok(keys.includes('keycloak.jwks.min_refresh_interval_seconds'))
  const example = readFileSync(new URL('../../../config.yaml', import.meta.url), 'utf8')
  for (const key of keys) {
    const leaf = key.split('.').at(-1) as string
    if (key === 'keycloak.realm') continue // derived from the issuer; the example leaves it out on purpose
    t.match(example, new RegExp(`^\\s*#?\\s*${leaf}:`, 'm'), `config.yaml documents ${key}`)
  }
})
