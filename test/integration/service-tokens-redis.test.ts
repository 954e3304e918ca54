// Issue 16 with store.sessions redis: three sidecars, each with its own SQLite file, sharing
// one real redis-server. One set of service tokens: created, rotated and revoked beside any
// replica, honoured by all within 1 s; a revoke made while Redis is dead holds once it is back.
import t from 'tap'
import { createHash } from 'node:crypto'
import { runCli } from '../../src/cli/run.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { startReplicas, within, type Replicas } from '../fixtures/replicas.ts'

const DAY = 86_400_000

type Sidecar = Replicas['sidecars'][number]

/** The status a replica answers /hello with for a bearer token. */
async function statusOn (sidecar: Sidecar, token: string): Promise<number> {
  return (await rawRequest(sidecar.proxyUrl, '/hello', { headers: { authorization: `Bearer ${token}` } })).status
}

async function everywhere (sidecars: readonly Sidecar[], token: string, status: number): Promise<boolean> {
  return (await Promise.all(sidecars.map(async (s) => await statusOn(s, token)))).every((got) => got === status)
}

/** `gatehouse tokens ...` against a replica's config, in this process, on the replicas' clock. */
async function tokens (replicas: Replicas, beside: Sidecar, ...args: string[]): Promise<{ code: number, out: string, err: string }> {
  const out: string[] = []
  const err: string[] = []
  const code = await runCli(['tokens', ...args, '-c', beside.configPath], { env: {}, clock: replicas.clock, output: { out: (l) => out.push(l), err: (l) => err.push(l) } })
  return { code, out: out.join('\n'), err: err.join('\n') }
}

async function created (replicas: Replicas, beside: Sidecar, name: string): Promise<string> {
  const r = await tokens(replicas, beside, 'create', name, '--roles', 'reports')
  if (r.code !== 0) throw new Error(`tokens create failed: ${r.err}`)
  return r.out.trim()
}

/** Every value under the key prefix, as text: what Redis' memory (and a dump of it) holds. */
async function redisBytes (replicas: Replicas): Promise<string> {
  const keys = (await replicas.redis.command('KEYS', 'app:*')).split('\r\n').filter((line) => line.startsWith('app:'))
  const parts: string[] = []
  for (const key of keys) {
    const type = (await replicas.redis.command('TYPE', key)).trim()
    if (type === '+hash') parts.push(await replicas.redis.command('HGETALL', key))
    else if (type === '+string') parts.push(await replicas.redis.command('GET', key))
    else if (type === '+zset') parts.push(await replicas.redis.command('ZRANGE', key, '0', '-1', 'WITHSCORES'))
    else if (type === '+set') parts.push(await replicas.redis.command('SMEMBERS', key))
  }
  return `${keys.join('\n')}\n${parts.join('\n')}`
}

t.test('a token created beside A works on B and C within 1 s; Redis holds its hash, never the token', async (t) => {
  const replicas = await startReplicas(t, 3)
  if (replicas === null) return
  const [a, b, c] = replicas.sidecars as [Sidecar, Sidecar, Sidecar]
  const token = await created(replicas, a, 'nightly')
  t.ok(await within(1000, async () => await everywhere([b, c], token, 200)), 'accepted by B and C within 1 s')
  t.equal(await statusOn(a, token), 200, 'and by A')
  t.equal(b.app.serviceTokens.repository.find('nightly')?.roles[0], 'reports', 'B holds the record in its own SQLite table (a local lookup)')

  const bytes = await redisBytes(replicas)
  t.match(bytes, 'app:service-tokens', 'the record is under the configured key prefix')
  t.ok(bytes.includes(createHash('sha256').update(token).digest('hex')), 'Redis holds the SHA-256 of the token')
  t.notOk(bytes.includes(token), 'never the token')
  t.notOk(bytes.includes(token.slice(16, 59)), 'nor its secret part')

  // A second replica's create of the same name is refused: one set of names for the app.
  const again = await tokens(replicas, c, 'create', 'nightly', '--roles', 'x')
  t.equal(again.code, 1)
  t.match(again.err, /ERR_SERVICE_TOKEN_EXISTS/)
  const listed = JSON.parse((await tokens(replicas, c, 'list', '--json')).out) as Array<{ name: string }>
  t.same(listed.map((v) => v.name), ['nightly'], 'tokens list beside C shows it')
})

t.test('a rotation beside C: the new token works everywhere within 1 s, the old one only within its grace', async (t) => {
  const replicas = await startReplicas(t, 3)
  if (replicas === null) return
  const { sidecars, clock } = replicas
  const [a, , c] = sidecars as [Sidecar, Sidecar, Sidecar]
  const old = await created(replicas, a, 'ci')
  t.ok(await within(1000, async () => await everywhere(sidecars, old, 200)), 'the first token works everywhere (and is cached)')
  const rotated = await tokens(replicas, c, 'rotate', 'ci', '--grace-days', '1')
  t.equal(rotated.code, 0, rotated.err)
  const fresh = rotated.out.trim()
  t.ok(await within(1000, async () => await everywhere(sidecars, fresh, 200)), 'the new token works on every replica within 1 s')
  t.ok(await everywhere(sidecars, old, 200), 'the old one still works inside the grace period')
  clock.advance(DAY + 60_000)
  t.ok(await everywhere(sidecars, old, 401), 'past the grace period the old one is refused everywhere')
  t.ok(await everywhere(sidecars, fresh, 200), 'the new one still works')
})

t.test('a revoke beside B is refused by A and C within 1 s; --previous-only too', async (t) => {
  const replicas = await startReplicas(t, 3)
  if (replicas === null) return
  const { sidecars } = replicas
  const [a, b, c] = sidecars as [Sidecar, Sidecar, Sidecar]
  const token = await created(replicas, a, 'partner-hook')
  t.ok(await within(1000, async () => await everywhere(sidecars, token, 200)), 'works everywhere, cached in each')
  const fresh = (await tokens(replicas, a, 'rotate', 'partner-hook', '--grace-days', '7')).out.trim()
  t.ok(await within(1000, async () => await everywhere(sidecars, fresh, 200) && await everywhere(sidecars, token, 200)))
  const previous = await tokens(replicas, b, 'revoke', 'partner-hook', '--previous-only', '--json')
  t.equal(previous.code, 0, previous.err)
  t.match(JSON.parse(previous.out), { changed: true, queued: false })
  t.ok(await within(1000, async () => await everywhere([a, c], token, 401)), 'the previous token is refused by A and C within 1 s')
  t.ok(await everywhere(sidecars, fresh, 200), 'the current one is untouched')
  const revoked = await tokens(replicas, b, 'revoke', 'partner-hook')
  t.equal(revoked.code, 0, revoked.err)
  t.ok(await within(1000, async () => await everywhere([a, c], fresh, 401)), 'the revoked token is refused by A and C within 1 s')
  t.equal(await statusOn(b, fresh), 401, 'and by B')
})

t.test('a revoke made while Redis is SIGKILLed holds on every replica once Redis is back (empty); create and rotate are refused meanwhile', async (t) => {
  const replicas = await startReplicas(t, 3)
  if (replicas === null) return
  const { sidecars, redis } = replicas
  const [a, b, c] = sidecars as [Sidecar, Sidecar, Sidecar]
  const doomed = await created(replicas, a, 'leaked')
  const kept = await created(replicas, a, 'kept')
  t.ok(await within(1000, async () => await everywhere(sidecars, doomed, 200) && await everywhere(sidecars, kept, 200)))

  await redis.kill()
  const revoke = await tokens(replicas, b, 'revoke', 'leaked', '--json')
  t.equal(revoke.code, 0, `a revoke is never refused for want of Redis: ${revoke.err}`)
  t.match(JSON.parse(revoke.out), { changed: true, queued: true })
  t.equal(await statusOn(b, doomed), 401, 'B (its database) refuses it at once')
  t.equal(await statusOn(a, kept), 200, 'every replica keeps authenticating from its SQLite copy')
  const create = await tokens(replicas, a, 'create', 'new-one', '--roles', 'x')
  t.equal(create.code, 1)
  t.match(create.err, /tokens create needs Redis .*\(ERR_SERVICE_TOKEN_REDIS_UNAVAILABLE\)/)
  const rotate = await tokens(replicas, c, 'rotate', 'kept')
  t.equal(rotate.code, 1)
  t.match(rotate.err, /ERR_SERVICE_TOKEN_REDIS_UNAVAILABLE/)
  t.equal(await statusOn(c, kept), 200, 'the refused rotation changed nothing')

  // Back without its data (no persistence): the replicas push their copies back, and B's
  // revoke wins over A's and C's unrevoked copies whoever reconnects first.
  await redis.restart()
  t.ok(await within(15_000, async () => await everywhere(sidecars, doomed, 401)), 'refused by every replica after Redis returns')
  t.ok(await everywhere(sidecars, kept, 200), 'the other token survived the empty Redis')
  const shared = await redis.command('HGET', 'app:service-tokens', 'leaked')
  t.match(shared, /"revoked_at":\d+/, 'Redis holds the revocation')
  t.equal(b.app.serviceTokens.repository.pendingCount(), 0, 'nothing waits on B any more')
  const after = await tokens(replicas, c, 'rotate', 'kept')
  t.equal(after.code, 0, `rotations work again: ${after.err}`)
  t.ok(await within(1000, async () => await everywhere(sidecars, after.out.trim(), 200)))
})
