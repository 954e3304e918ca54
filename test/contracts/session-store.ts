/**
 * The session-store contract suite (HOUSE-STYLE §6, issue 14): one set of behaviours every
 * implementation of `SessionStore` must show, run against each by `session-store.test.ts`,
 * as oauth2-proxy runs one suite against each of its session stores.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { sha256 } from '../../src/store/crypto.ts'
import type { RefreshLease, SessionStore } from '../../src/store/session-store.ts'
import type { SessionRecord } from '../../src/store/sessions.ts'
import type { CachedTokens } from '../../src/store/token-cache.ts'
import type { ManualClock } from '../fixtures/clock.ts'

/** One store under test, a second handle onto the same shared state, and what is stored. */
export interface OpenedStore {
  store: SessionStore
  /** Another process or replica on the same shared state (its own local copy, if any). */
  peer: SessionStore
  /** The time both stores read (the lock's lease uses it where the store keeps time itself). */
  clock: ManualClock
  /** Everything the shared state holds, keys and values, as text: for the at-rest checks. */
  dump: () => Promise<string>
  /**
   * Lets time pass for the store's own expiry (Redis' TTLs run on its clock, not ours):
   * resolves once a lease of `ttlMs` given now has run out.
   */
  outlive: (ttlMs: number) => Promise<void>
}

/** How the suite gets a fresh, empty store; null when it cannot run here (skipped by the opener). */
export type StoreOpener = (t: Test) => Promise<OpenedStore | null>

const HOUR = 3_600_000

/** A session record as the service makes one, `overrides` applied. */
export function sessionRecord (now: number, overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id: randomUUID(),
    username: 'alice',
    subject: 'sub-alice',
    mode: 'keycloak',
    keycloakSid: `sid-${randomUUID()}`,
    identity: { user: 'sub-alice', preferredUsername: 'alice', email: 'alice@example.test', groups: ['staff'], roles: ['reader'] },
    ip: '127.0.0.1',
    userAgent: 'contract',
    createdAt: now,
    lastSeenAt: now,
    expiresAt: now + 8 * HOUR,
    endedAt: null,
    endReason: null,
    localBasis: false,
    ...overrides
  }
}

/** A token set for a session, each token a recognisable random string. */
export function tokensFor (record: SessionRecord, now: number, overrides: Partial<CachedTokens> = {}): CachedTokens {
  return {
    sessionId: record.id,
    username: record.username,
    accessToken: `access-${randomBytes(12).toString('hex')}`,
    refreshToken: `refresh-${randomBytes(12).toString('hex')}`,
    idToken: `id-${randomBytes(12).toString('hex')}`,
    accessExpiresAt: now + 300_000,
    refreshExpiresAt: now + HOUR,
    cachedAt: now,
    refreshedAt: null,
    ...overrides
  }
}

async function newSession (store: SessionStore, now: number, overrides: Partial<SessionRecord> = {}, withTokens = true): Promise<{ record: SessionRecord, secret: string, hash: Buffer, tokens: CachedTokens | null }> {
  const record = sessionRecord(now, overrides)
  const secret = randomBytes(32).toString('base64url')
  const hash = sha256(secret)
  const tokens = withTokens ? tokensFor(record, now) : null
  await store.insert(record, hash, tokens)
  return { record, secret, hash, tokens }
}

/** Resolves when `check` holds, polling; fails the test with `what` after `ms` (no sleeps in assertions). */
export async function eventually (t: Test, what: string, check: () => boolean | Promise<boolean>, ms = 1000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return true
    await new Promise((resolve) => setImmediate(resolve))
  }
  const ok = await check()
  t.ok(ok, `${what} within ${ms} ms`)
  return ok
}

/** Runs the whole contract against the stores `open` gives. */
export function sessionStoreContract (t: Test, name: string, open: StoreOpener): void {
  const test = (title: string, fn: (t: Test, s: OpenedStore) => Promise<unknown>): void => {
    t.test(`${name}: ${title}`, async (t) => {
      const opened = await open(t)
      if (opened === null) return
      await fn(t, opened)
    })
  }

  test('a session is found by the hash of its secret, with its tokens decrypted, from every replica', async (t, { store, peer, clock }) => {
    const { record, hash, tokens } = await newSession(store, clock.now())
    t.same(await store.findLive(hash), { record, tokens })
    t.same(await peer.findLive(hash), { record, tokens }, 'the peer sees it')
    t.equal(await store.findLive(sha256('another secret')), null)
    t.same((await store.find(record.id))?.record, record)
    t.equal(await store.find(randomUUID()), null)
  })

  test('at rest: no secret, no token and no refresh token in plain text, keys included', async (t, { store, clock, dump }) => {
    const { secret, tokens, hash } = await newSession(store, clock.now())
    const text = await dump()
    t.notOk(text.includes(secret), 'no session secret')
    t.notOk(text.includes(Buffer.from(secret).toString('hex')), 'no session secret in hex')
    for (const token of [tokens?.accessToken, tokens?.refreshToken, tokens?.idToken]) t.notOk(text.includes(token as string), 'no token')
    t.ok(text.includes(hash.toString('hex')) || text.includes(hash.toString('base64')) || text.includes(hash.toString('latin1')), 'the SHA-256 is what is kept')
  })

  test('ending a session ends it everywhere once, with its tokens', async (t, { store, peer, clock }) => {
    const { record, hash } = await newSession(store, clock.now())
    t.equal(await peer.end(record.id, 'logout', clock.now()), true)
    t.equal(await peer.end(record.id, 'logout', clock.now()), false, 'already ended')
    t.equal(await store.findLive(hash), null, 'not found as live by the other')
    const ended = await store.find(record.id)
    t.equal(ended?.record.endReason, 'logout')
    t.equal(ended?.record.endedAt, clock.now())
    t.equal(ended?.tokens, null, 'its tokens are gone')
    t.equal(await store.end(randomUUID(), 'logout', clock.now()), false, 'an unknown id ends nothing')
  })

  test('endWhere: by sid, by subject without sid, by user name, never `except`', async (t, { store, peer, clock }) => {
    const now = clock.now()
    const a = await newSession(store, now, { keycloakSid: 'sid-1' })
    const b = await newSession(store, now, { keycloakSid: null })
    const c = await newSession(store, now, { keycloakSid: 'sid-2' })
    const d = await newSession(store, now, { username: 'bob', subject: 'sub-bob', keycloakSid: null })
    t.same(await peer.endWhere({ keycloakSid: 'sid-1' }, 'backchannel_logout', now), [a.record.id])
    t.same(await peer.endWhere({ subject: 'sub-alice', sidless: true }, 'backchannel_logout', now), [b.record.id], 'sidless: only the session without a sid')
    t.same(await peer.endWhere({ username: 'alice' }, 'password_changed', now, c.record.id), [], 'the one left is the exception')
    t.same(await peer.endWhere({}, 'nothing', now), [], 'an empty match ends nothing')
    t.same(await store.endWhere({ username: 'bob' }, 'user_disabled', now), [d.record.id])
    t.not(await store.findLive(c.hash), null, 'the exception lives')
    t.equal(await store.findLive(d.hash), null)
  })

  test('revocations reach the other replica: its listener hears of them', async (t, { store, peer, clock }) => {
    const { record } = await newSession(store, clock.now())
    const heard: Array<readonly string[] | null> = []
    const unsubscribe = store.onRevoked((ids) => { heard.push(ids) })
    t.teardown(unsubscribe)
    store.pollRevocations()
    await peer.end(record.id, 'invalidated', clock.now())
    const told = (): boolean => { store.pollRevocations(); return heard.some((ids) => ids === null || ids.includes(record.id)) }
    t.ok(await eventually(t, 'the revocation is heard', told), 'heard')
  })

  test('touches never move last-seen back', async (t, { store, clock }) => {
    const now = clock.now()
    const { record } = await newSession(store, now)
    await store.touch(new Map([[record.id, now + 5000]]))
    await store.touch(new Map([[record.id, now + 1000]]))
    t.equal((await store.find(record.id))?.record.lastSeenAt, now + 5000)
    await store.touch(new Map())
  })

  test('update: mode, identity and tokens change; null drops the tokens; an ended session is not updated', async (t, { store, peer, clock }) => {
    const now = clock.now()
    const { record, hash } = await newSession(store, now)
    const next = tokensFor(record, now + 1000)
    t.equal(await store.update(record.id, { mode: 'keycloak', identity: { ...record.identity, roles: ['writer'] }, subject: 'sub-alice', keycloakSid: 'sid-new', tokens: next }), true)
    const seen = await peer.findLive(hash)
    t.same(seen?.tokens, next, 'new tokens everywhere')
    t.same(seen?.record.identity.roles, ['writer'])
    t.equal(seen?.record.keycloakSid, 'sid-new')
    t.equal(await store.update(record.id, { mode: 'cached', identity: record.identity, subject: 'sub-alice', keycloakSid: 'sid-new' }), true)
    t.same((await peer.find(record.id))?.tokens, next, 'absent tokens are kept')
    t.equal((await peer.find(record.id))?.record.mode, 'cached')
    t.equal(await store.update(record.id, { mode: 'local', identity: record.identity, subject: 'sub-alice', keycloakSid: null, tokens: null }), true)
    t.equal((await peer.find(record.id))?.tokens, null, 'null drops them')
    await store.end(record.id, 'logout', now)
    t.equal(await store.update(record.id, { mode: 'keycloak', identity: record.identity, subject: null, keycloakSid: null, tokens: next }), false, 'ended stays ended')
    t.equal((await peer.find(record.id))?.tokens, null)
  })

  test('the refresh lock: one holder at a time across replicas, growing fences, stale fences refused', async (t, { store, peer, clock, outlive }) => {
    const now = clock.now()
    const { record } = await newSession(store, now)
    const first = await store.lockRefresh(record.id, 60_000)
    if (typeof first === 'string') { t.fail(`no lease: ${first}`); return }
    t.equal(await peer.lockRefresh(record.id, 60_000), 'held', 'the peer waits')
    t.equal(await store.lockRefresh(record.id, 60_000), 'held', 'so does this one')
    await first.release()
    const second = await peer.lockRefresh(record.id, 60_000)
    if (typeof second === 'string') { t.fail(`no lease after release: ${second}`); return }
    t.ok(second.fence > first.fence, 'the fence grows')
    const change = { mode: 'keycloak' as const, identity: record.identity, subject: record.subject, keycloakSid: record.keycloakSid, tokens: tokensFor(record, now) }
    t.equal(await peer.update(record.id, change, second.fence), true, 'the holder writes')
    t.equal(await store.update(record.id, { ...change, tokens: tokensFor(record, now) }, first.fence), false, 'a stale holder is refused')
    t.same((await store.find(record.id))?.tokens, change.tokens, 'the holder\'s tokens stay')
    t.equal(await store.update(record.id, { mode: 'cached', identity: record.identity, subject: record.subject, keycloakSid: record.keycloakSid }), true, 'a write outside any refresh (a fall to cached) is not fenced')
    await first.release()
    t.equal(await store.lockRefresh(record.id, 60_000), 'held', 'a stale release frees nothing')
    await second.release()

    // A holder that never gives it back loses it when its lease runs out.
    const short = await store.lockRefresh(record.id, 200)
    if (typeof short === 'string') { t.fail(`no short lease: ${short}`); return }
    await outlive(200)
    const taken: { lease: RefreshLease | string } = { lease: 'held' }
    await eventually(t, 'the lapsed lease is taken', async () => { taken.lease = await peer.lockRefresh(record.id, 60_000); return typeof taken.lease !== 'string' }, 2000)
    t.ok(typeof taken.lease !== 'string' && taken.lease.fence > short.fence, 'with a larger fence')
  })

  test('lockout: reserve counts before the check, atomically; success resets the user, void forgets', async (t, { store, peer, clock }) => {
    const policy = { maxFailures: 3, lockoutMs: 15 * 60_000 }
    const now = clock.now()
    const since = now - 15 * 60_000
    const user = `user-${randomUUID()}`
    const attempt = { username: user, ip: '10.0.0.1', channel: 'form' as const }
    // Six at once over two replicas: exactly three get through, as in one transaction.
    const all = await Promise.all([store, peer, store, peer, store, peer].map((s) => s.reserveAttempt(attempt, now, since, policy)))
    const granted = all.filter((r) => 'id' in r)
    t.equal(granted.length, 3, 'three reservations')
    t.ok(all.filter((r) => 'lockedForSeconds' in r).every((r) => 'lockedForSeconds' in r && r.lockedForSeconds === 900), 'the rest are locked for the whole lockout')
    t.same(await peer.failures(user, '10.0.0.1', since), [{ count: 3, latest: now }, { count: 3, latest: now }])
    // The user's case does not matter.
    t.same((await store.failures(user.toUpperCase(), null, since))[0], { count: 3, latest: now })

    const other = `user-${randomUUID()}`
    const r1 = await store.reserveAttempt({ username: other, ip: '10.0.0.2', channel: 'form' }, now, since, policy)
    const r2 = await peer.reserveAttempt({ username: other, ip: '10.0.0.2', channel: 'form' }, now + 1, since, policy)
    const r3 = await store.reserveAttempt({ username: other, ip: '10.0.0.2', channel: 'form' }, now + 2, since, policy)
    if (!('id' in r1) || !('id' in r2) || !('id' in r3)) { t.fail('reservations refused'); return }
    await peer.settleAttempt(r1.id, 'failure')
    await store.settleAttempt(r2.id, 'void')
    t.same(await store.failures(other, '10.0.0.2', since), [{ count: 2, latest: now + 2 }, { count: 2, latest: now + 2 }], 'void forgot one')
    await peer.settleAttempt(r3.id, 'success')
    const after = await store.failures(other, '10.0.0.2', since)
    t.equal(after[0]?.count, 0, 'a success resets the user')
    t.equal(after[1]?.count, 1, 'not the address: the failure before it stays')
    t.same(await store.failures(other, null, now + 10), [{ count: 0, latest: null }], 'old failures do not count')
  })

  test('list, count by mode, expire, purge', async (t, { store, peer, clock }) => {
    const now = clock.now()
    const user = `u-${randomUUID()}`
    const a = await newSession(store, now - 3000, { username: user, mode: 'local', createdAt: now - 3000, lastSeenAt: now - 3000 }, false)
    const b = await newSession(peer, now - 2000, { username: user, mode: 'cached', createdAt: now - 2000, lastSeenAt: now - 2000 })
    const c = await newSession(store, now - 1000, { username: user, createdAt: now - 1000, lastSeenAt: now - 1000, expiresAt: now + 60_000 })
    t.same((await peer.list({ username: user })).map((s) => s.id), [c.record.id, b.record.id, a.record.id], 'newest first')
    const counts = await store.countByMode(now)
    t.ok(counts.local >= 1 && counts.cached >= 1 && counts.keycloak >= 1, 'counted by mode')
    await store.end(b.record.id, 'logout', now)
    t.same((await peer.list({ username: user })).map((s) => s.id), [c.record.id, a.record.id], 'live only')
    t.same((await peer.list({ username: user, includeEnded: true })).map((s) => s.id), [c.record.id, b.record.id, a.record.id], 'ended too')
    t.ok((await store.list()).some((s) => s.id === a.record.id), 'everyone\'s')

    clock.advance(60_000)
    // c passed its absolute end; a is idle past 61 s; nothing else of this user is left.
    t.ok(await peer.expire(clock.now(), 61_000) >= 2)
    t.equal((await store.find(c.record.id))?.record.endReason, 'expired')
    t.equal((await store.find(a.record.id))?.record.endReason, 'expired')
    t.equal(await store.findLive(c.hash), null)
    t.equal(await store.purge(clock.now(), 120_000), 0, 'ended too recently to purge')
    t.ok(await store.purge(clock.now() + 120_000, 60_000) >= 3)
    t.equal(await peer.find(b.record.id), null, 'purged')
  })

  test('tokens: refresh candidates, usable counts, cleanup of tokens past their grace', async (t, { store, peer, clock }) => {
    const now = clock.now()
    const grace = HOUR
    const soon = sessionRecord(now)
    await store.insert(soon, sha256(randomBytes(32)), tokensFor(soon, now, { accessExpiresAt: now + 10_000 }))
    const later = sessionRecord(now)
    await store.insert(later, sha256(randomBytes(32)), tokensFor(later, now, { accessExpiresAt: now + 3_600_000 }))
    const noRefresh = sessionRecord(now)
    await store.insert(noRefresh, sha256(randomBytes(32)), tokensFor(noRefresh, now, { accessExpiresAt: now, refreshToken: null }))
    const stale = sessionRecord(now)
    await store.insert(stale, sha256(randomBytes(32)), tokensFor(stale, now - 2 * grace, { accessExpiresAt: now - grace, cachedAt: now - 2 * grace }))
    const candidates = await peer.refreshCandidates(now + 60_000, 50)
    t.ok(candidates.includes(soon.id) && candidates.includes(stale.id), 'expiring ones with a refresh token')
    t.notOk(candidates.includes(later.id) || candidates.includes(noRefresh.id), 'not the fresh one nor the one without refresh token')
    const usable = await peer.countUsableTokens(now, grace)
    t.ok(usable >= 3, 'fresh or inside the grace')
    t.ok(await store.cleanupTokens(now, grace) >= 1, 'the stale set is removed')
    t.equal((await peer.find(stale.id))?.tokens, null)
    t.not((await peer.find(soon.id))?.tokens, null)
    t.equal(await peer.countUsableTokens(now, grace), usable, 'the usable ones stay')
  })
}
