// Writes the generated documentation: `npm run docs`.
import { writeFileSync } from 'node:fs'
import { configReference } from '../src/config/reference.ts'

writeFileSync(new URL('../docs/configuration.md', import.meta.url), configReference())
process.stdout.write('wrote docs/configuration.md\n')
