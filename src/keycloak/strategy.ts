/** How a server is chosen among the healthy ones (`keycloak.ha.strategy`). */
export type Strategy = 'priority' | 'round_robin' | 'random'

/** What a strategy knows of a server. */
export interface Candidate {
  /** Position in the configuration: the stable tie-breaker. */
  index: number
  priority: number
  weight: number
}

/** Picks the order in which servers are tried for one call. */
export interface Selector {
  /** `healthy` (closed circuits) first in strategy order, then nothing else: others are not called. */
  order: (healthy: readonly Candidate[]) => Candidate[]
}

/** A source of uniform numbers in [0, 1). Injectable so tests can be exact. */
export type Random = () => number

/**
 * The selector for `strategy`:
 * - `priority`: lowest `priority` first, configuration order among equals; a backup is used
 *   only while every better server is unhealthy.
 * - `round_robin`: smooth weighted round robin (nginx's algorithm): over any run of picks each
 *   healthy server leads in proportion to its `weight`, interleaved rather than in bursts; the
 *   others follow as failover in priority order.
 * - `random`: a uniformly random healthy server leads, the others follow in random order.
 */
export function createSelector (strategy: Strategy, random: Random = Math.random): Selector {
  switch (strategy) {
    case 'priority':
      return { order: (healthy) => byPriority(healthy) }
    case 'round_robin':
      return smoothWeighted()
    case 'random':
      return { order: (healthy) => shuffle(healthy, random) }
  }
}

function byPriority (servers: readonly Candidate[]): Candidate[] {
  return [...servers].sort((a, b) => a.priority - b.priority || a.index - b.index)
}

function smoothWeighted (): Selector {
  // Current weights persist between picks, per server (by configuration index).
  const current = new Map<number, number>()
  return {
    order: (healthy) => {
      if (healthy.length === 0) return []
      let total = 0
      let best: Candidate | undefined
      for (const server of healthy) {
        const value = (current.get(server.index) ?? 0) + server.weight
        current.set(server.index, value)
        total += server.weight
        if (best === undefined || value > (current.get(best.index) ?? 0)) best = server
      }
      const chosen = best as Candidate
      current.set(chosen.index, (current.get(chosen.index) ?? 0) - total)
      return [chosen, ...byPriority(healthy.filter((s) => s !== chosen))]
    }
  }
}

function shuffle (servers: readonly Candidate[], random: Random): Candidate[] {
  const out = [...servers]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const tmp = out[i] as Candidate
    out[i] = out[j] as Candidate
    out[j] = tmp
  }
  return out
}
