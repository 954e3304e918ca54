// `npm run bench` helper: what one access line costs, written the way Gatehouse writes it
// (createAccessLog over the batching sink, to standard output), measured as this process's
// CPU time per line with standard output sent to a file or to a pipe by the caller. Prints
// one JSON line on standard error.
import { createAccessLog } from '../dist/access-log.js'
import { BatchedSink } from '../dist/log-sink.js'

const lines = Number(process.argv[2] ?? 200000)
const sink = new BatchedSink(process.stdout)
const log = createAccessLog(sink)
const entry = (i) => ({ reqId: `b3f1c2e0-7a4d-4c1e-9f0a-${String(i).padStart(12, '0')}`, method: 'GET', path: '/api/v1/items/42', status: 200, decision: 'allow', reason: 'authenticated', rule: 'default (authenticated)', authMode: 'token', user: 'f1e2d3c4-b5a6-4789-8abc-def012345678', ip: '10.1.2.3', latencyMs: 1.23 })
const run = async (n, write) => {
  const before = process.cpuUsage()
  for (let i = 0; i < n; i++) {
    write(entry(i))
    // As in a server: other work between lines lets a batch go out; yield now and then.
    if (i % 256 === 255) await new Promise((resolve) => setImmediate(resolve))
  }
  await new Promise((resolve) => sink.flush(resolve))
  const used = process.cpuUsage(before)
  return (used.user + used.system) / n
}
await run(20000, (e) => log.write(e)) // warm-up
const empty = await run(lines, () => {})
const full = await run(lines, (e) => log.write(e))
process.stderr.write(`${JSON.stringify({ line_us: full - empty, loop_us: empty })}\n`)
