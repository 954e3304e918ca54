// Copies the files tsc does not emit (SQL migrations) next to the compiled code in dist/.
import { cpSync } from 'node:fs'

cpSync(new URL('../src/store/migrations/', import.meta.url), new URL('../dist/store/migrations/', import.meta.url), { recursive: true })
