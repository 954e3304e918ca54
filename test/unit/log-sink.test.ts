import t from 'tap'
import { Writable } from 'node:stream'
import { BatchedSink } from '../../src/log-sink.ts'
import { createAccessLog, jsonString } from '../../src/access-log.ts'
import { createLoggers, droppedLogLines } from '../../src/log.ts'

/** A stream that records writes and can be told to hold them (a slow reader). */
function recorder (highWaterMark = 16) {
  const chunks: string[] = []
  let release: (() => void) | null = null
  let holding = false
  const stream = new Writable({
    highWaterMark,
    write (chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString())
      if (holding) release = done
      else done()
    }
  })
  return {
    stream,
    chunks,
    hold: () => { holding = true },
    drain: () => { holding = false; const r = release; release = null; r?.() }
  }
}

t.test('lines written in one burst leave as one chunk, in order, and flush() waits for them', async (t) => {
  const r = recorder()
  const sink = new BatchedSink(r.stream)
  sink.write('a\n')
  sink.write('b\n')
  sink.write('c\n')
  t.same(r.chunks, [], 'nothing is written synchronously')
  await new Promise<void>((resolve) => sink.flush(() => resolve()))
  t.same(r.chunks, ['a\nb\nc\n'])
})

t.test('with a write limit (several workers on one pipe) each write is whole lines and within it, unless one line alone is longer', async (t) => {
  const r = recorder(1 << 20)
  const sink = new BatchedSink(r.stream, Infinity, 100)
  const lines = Array.from({ length: 12 }, (_, i) => `${JSON.stringify({ n: i, text: 'é'.repeat(10) })}\n`)
  for (const line of lines) sink.write(line)
  const long = `${'x'.repeat(250)}\n`
  sink.write(long)
  sink.write('tail\n')
  await new Promise<void>((resolve) => sink.flush(() => resolve()))
  t.equal(r.chunks.join(''), [...lines, long, 'tail\n'].join(''), 'nothing lost or reordered')
  t.ok(r.chunks.length > 2, `cut into ${r.chunks.length} writes`)
  for (const chunk of r.chunks) {
    t.ok(chunk.endsWith('\n'), 'a write ends at a line end')
    if (chunk !== long) t.ok(Buffer.byteLength(chunk) <= 100, `${Buffer.byteLength(chunk)} bytes, counted as bytes (é is two)`)
  }
  t.ok(r.chunks.includes(long), 'the over-long line went alone')
})

t.test('a slow reader makes lines drop and be counted, never block; the count is reported later', async (t) => {
  const r = recorder(1)
  const sink = new BatchedSink(r.stream, 10)
  r.hold()
  sink.write('first line that fills the backlog\n')
  sink.flush()
  t.ok(r.stream.writableLength > 10)
  sink.write('dropped 1\n')
  sink.write('dropped 2\n')
  t.equal(sink.dropped, 2)
  r.drain()
  await new Promise<void>((resolve) => setImmediate(resolve))
  sink.write('after\n')
  await new Promise<void>((resolve) => sink.flush(() => resolve()))
  const text = r.chunks.join('')
  t.notMatch(text, 'dropped 1')
  const report = text.split('\n').find((l) => l.includes('log lines dropped'))
  t.ok(report)
  t.match(JSON.parse(report ?? '{}'), { level: 40, dropped: 2, msg: 'log lines dropped: standard output was not read fast enough' })
  t.match(text, 'after\n')
  t.equal(sink.dropped, 0)
  t.equal(sink.droppedTotal, 2, 'the running total is not reset by the report')
})

t.test('lines written after the stream failed or closed, and lines in a failed write, are counted as dropped', async (t) => {
  const failing = new Writable({ write (_chunk, _enc, done) { done(new Error('EPIPE')) } })
  failing.on('error', () => {})
  const sink = new BatchedSink(failing)
  sink.write('a\n')
  sink.write('b\n')
  sink.flush()
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.equal(sink.droppedTotal, 2, 'the failed chunk held two lines')
  sink.write('c\n')
  t.equal(sink.droppedTotal, 3, 'a failed stream takes no more lines')

  const r = recorder()
  const closing = new BatchedSink(r.stream)
  r.stream.end()
  closing.write('late\n')
  t.equal(closing.droppedTotal, 1)
  t.same(r.chunks, [])
})

t.test('droppedLogLines reads the total of the sink under a logger and its children', async (t) => {
  const r = recorder(1)
  const sink = new BatchedSink(r.stream, 10)
  const { log } = createLoggers({ destination: sink })
  const read = droppedLogLines(log.child({ module: 'x' }))
  r.hold()
  log.info('a line long enough to fill the backlog')
  sink.flush()
  log.info('dropped')
  t.equal(read(), 1)
  r.drain()
  t.equal(droppedLogLines(createLoggers({ destination: { write: () => {} } }).log)(), 0, 'another destination drops nothing')
})

t.test('access lines are pino-shaped JSON and escape what clients or operators spell', async (t) => {
  const lines: string[] = []
  const access = createAccessLog({ write: (line: string) => { lines.push(line) } })
  access.write({ reqId: 'r-1', method: 'GET', path: '/a"b\\c\u2028', status: 403, decision: 'deny', reason: 'missing_role', rule: 'admin "area"', authMode: 'token', user: 'ü"ser', ip: '127.0.0.1', latencyMs: 0.42 })
  access.write({ reqId: 'r-2', method: 'POST', path: '/x', status: 401, decision: 'deny', reason: null, rule: null, authMode: 'none', user: null, ip: '::1', latencyMs: 1 })
  const [first, second] = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(first, { level: 30, service: 'gatehouse', module: 'access', reqId: 'r-1', method: 'GET', path: '/a"b\\c\u2028', status: 403, decision: 'deny', reason: 'missing_role', rule: 'admin "area"', auth_mode: 'token', user: 'ü"ser', ip: '127.0.0.1', latency_ms: 0.42, msg: 'request' })
  t.type(first?.time, 'number')
  t.match(second, { reason: null, rule: null, user: null, ip: '::1' })
})

t.test('every free field of an access line is escaped: the line stays one JSON object with the same keys', async (t) => {
  const lines: string[] = []
  const access = createAccessLog({ write: (line: string) => { lines.push(line) } })
  const nasty = ['x","user":"root', 'a\\b', 'line\nbreak', '\u0000\u001f', 'caf\u00e9', '\ud800', '"}{"']
  for (const value of nasty) {
    access.write({ reqId: value, method: value, path: value, status: 200, decision: 'allow', reason: 'public', rule: value, missing: value, authMode: 'none', user: value, ip: value, latencyMs: Number.NaN })
  }
  t.equal(lines.length, nasty.length)
  lines.forEach((line, i) => {
    t.equal(line.indexOf('\n'), line.length - 1, 'one line')
    const entry = JSON.parse(line) as Record<string, unknown>
    t.same(Object.keys(entry), ['level', 'time', 'service', 'module', 'reqId', 'method', 'path', 'status', 'decision', 'reason', 'rule', 'missing', 'auth_mode', 'user', 'ip', 'latency_ms', 'msg'])
    const expected = nasty[i] === '\ud800' ? '\ufffd' : nasty[i]
    for (const field of ['reqId', 'method', 'path', 'rule', 'missing', 'user', 'ip']) {
      t.equal(entry[field] === '\ud800' ? '\ufffd' : entry[field], expected, `${field} round-trips`)
    }
    t.equal(entry.latency_ms, null, 'NaN is not a JSON number')
  })
})

t.test('jsonString quotes plain ASCII as it is and escapes everything else as JSON.stringify does', async (t) => {
  t.equal(jsonString('GET'), '"GET"')
  t.equal(jsonString('203.0.113.7'), '"203.0.113.7"')
  t.equal(jsonString(''), '""')
  for (const value of ['"', '\\', '\u007f', '\u00e9', '\u2028', '\ud83d\ude00', '\ud800', '\t']) t.equal(jsonString(value), JSON.stringify(value), [...value].map((c) => `U+${(c.codePointAt(0) ?? 0).toString(16)}`).join(' '))
})

t.test('censored log and access lines share one destination; above info there are no access lines', async (t) => {
  const out: string[] = []
  const destination = { write: (line: string) => { out.push(line) } }
  const { log, access } = createLoggers({ destination })
  log.info({ password: 'hunter2', nested: { token: 'abc', refresh_token: 'def' }, headers: { authorization: 'Bearer x', cookie: 'c=1' } }, 'secret things')
  t.ok(access)
  const line = JSON.parse(out[0] ?? '{}') as Record<string, unknown>
  t.same([line.password, (line.nested as Record<string, unknown>).token, (line.nested as Record<string, unknown>).refresh_token], ['[redacted]', '[redacted]', '[redacted]'])
  t.same(line.headers, { authorization: '[redacted]', cookie: '[redacted]' })
  t.notMatch(out.join(''), /hunter2|abc|def|Bearer x|c=1/)
  t.equal(createLoggers({ destination, level: 'warn' }).access, null)
})

t.test('latency is written to two decimals as String() writes the rounded number', async (t) => {
  const lines: string[] = []
  const access = createAccessLog({ write: (line: string) => { lines.push(line) } })
  const values = [0, 0.05, 0.1, 0.42, 1, 1.2, 1.23, 9.99, 10.01, 123.45, 99999.99, 0.004, 0.005, 2.675, 1e9]
  for (const latencyMs of values) access.write({ reqId: 'r', method: 'GET', path: '/', status: 200, decision: 'allow', reason: 'public', rule: null, authMode: 'none', user: null, ip: '::1', latencyMs })
  lines.forEach((line, i) => {
    const expected = String(Math.round((values[i] as number) * 100) / 100)
    t.equal(/"latency_ms":([^,]+),/.exec(line)?.[1], expected, `${values[i] as number} ms`)
  })
})
