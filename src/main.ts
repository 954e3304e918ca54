#!/usr/bin/env node
import { runCli } from './cli/run.ts'

// The process exits once the command is done: pooled keep-alive sockets must not hold it open.
runCli(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`gatehouse: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
