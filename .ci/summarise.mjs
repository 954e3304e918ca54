// Reads the TAP stream of `npm test -- --reporter=tap` on stdin and prints one line,
// `N passed, N failed`, counting individual assertions: a test point that closes a subtest
// summarises its children and is not counted again, unless the subtest failed with no
// failing assertion inside (a crash or a timeout), which counts as one failure.
// Exits 1 when anything failed or nothing ran.
import { Parser } from 'tap-parser'

const totals = { passed: 0, failed: 0, skipped: 0 }

/** Counts leaf assertions under `parser`; returns a getter for its own failure count. */
function watch (parser) {
  let failures = 0
  const children = []
  parser.on('child', (child) => { children.push(watch(child)) })
  parser.on('assert', (result) => {
    const child = children.shift()
    if (child !== undefined) {
      if (!result.ok && !result.todo && !result.skip && child() === 0) {
        totals.failed++
        failures++
      }
      failures += child()
      return
    }
    if (result.skip || result.todo) totals.skipped++
    else if (result.ok) totals.passed++
    else {
      totals.failed++
      failures++
    }
  })
  return () => failures
}

const root = new Parser()
watch(root)
root.on('complete', (final) => {
  if (!final.ok && totals.failed === 0) totals.failed = 1
  process.stdout.write(`${totals.passed} passed, ${totals.failed} failed${totals.skipped > 0 ? `, ${totals.skipped} skipped` : ''}\n`)
  process.exitCode = totals.failed > 0 || totals.passed === 0 ? 1 : 0
})
process.stdin.pipe(root)
