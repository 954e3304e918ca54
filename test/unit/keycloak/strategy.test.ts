import t from 'tap'
import { createSelector, type Candidate } from '../../../src/keycloak/strategy.ts'

const servers: Candidate[] = [
  { index: 0, priority: 2, weight: 50 },
  { index: 1, priority: 1, weight: 100 },
  { index: 2, priority: 3, weight: 25 }
]

t.test('priority: lowest priority first, the rest as failover in priority order', async (t) => {
  const select = createSelector('priority')
  t.same(select.order(servers).map((s) => s.index), [1, 0, 2])
  t.same(select.order([servers[0] as Candidate, servers[2] as Candidate]).map((s) => s.index), [0, 2], 'the backup leads while the primary is unhealthy')
  const tied = [{ index: 0, priority: 1, weight: 1 }, { index: 1, priority: 1, weight: 1 }]
  t.same(select.order(tied).map((s) => s.index), [0, 1], 'configuration order breaks ties')
})

t.test('round_robin spreads 10,000 picks in proportion to weight, interleaved', async (t) => {
  const select = createSelector('round_robin')
  const counts = [0, 0, 0]
  const firsts: number[] = []
  for (let i = 0; i < 10_000; i++) {
    const [first] = select.order(servers)
    counts[first?.index ?? 0] = (counts[first?.index ?? 0] ?? 0) + 1
    if (i < 7) firsts.push(first?.index ?? -1)
  }
  // Smooth weighted round robin is exact over every full cycle of 175 picks (50+100+25).
  const total = 175
  for (const s of servers) {
    const expected = 10_000 * s.weight / total
    t.ok(Math.abs((counts[s.index] ?? 0) - expected) <= 2, `server ${s.index}: ${counts[s.index]} picks, expected ${expected.toFixed(1)}`)
  }
  t.same(firsts, [1, 0, 1, 2, 1, 0, 1], 'picks interleave rather than come in bursts')
})

t.test('round_robin never leads with an unhealthy server, and rebalances among the healthy', async (t) => {
  const select = createSelector('round_robin')
  const healthy = [servers[0] as Candidate, servers[2] as Candidate]
  const counts = [0, 0, 0]
  for (let i = 0; i < 750; i++) { const index = select.order(healthy)[0]?.index ?? 0; counts[index] = (counts[index] ?? 0) + 1 }
  t.equal(counts[1], 0, 'the open server was never picked')
  t.same([counts[0], counts[2]], [500, 250], '50:25 over 750 picks')
  t.same(select.order(healthy).map((s) => s.index).length, 2, 'the rest follow as failover')
})

t.test('random: every healthy server leads sometimes, the open one never', async (t) => {
  let seed = 42
  const random = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 }
  const select = createSelector('random', random)
  const counts = new Map<number, number>()
  let lengths = 0
  for (let i = 0; i < 3000; i++) {
    const order = select.order(servers.slice(0, 2))
    lengths += order.length
    counts.set(order[0]?.index ?? -1, (counts.get(order[0]?.index ?? -1) ?? 0) + 1)
  }
  t.equal(lengths, 6000, 'every healthy server is in every order')
  t.same([...counts.keys()].sort(), [0, 1])
  for (const [, n] of counts) t.ok(n > 1200 && n < 1800, `uniform enough: ${n} of 3000`)
  t.same(select.order([]), [])
})
