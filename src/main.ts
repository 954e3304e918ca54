#!/usr/bin/env node
import { runCli } from './cli/run.ts'

// The one place the CLI meets the real process: everything it reads is handed over here.
// The process exits once the command is done: pooled keep-alive sockets must not hold it open.
runCli(process.argv.slice(2), { env: process.env, cwd: process.cwd(), stdin: process.stdin, prompts: process.stderr, progressTty: process.stderr.isTTY }).then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`gatehouse: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
