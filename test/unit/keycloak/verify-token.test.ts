import t from 'tap'
import { generateKeyPair, exportJWK, SignJWT, type JWK, type CryptoKey } from 'jose'
import { createHmac } from 'node:crypto'
import { openDatabase } from '../../../src/store/db.ts'
import { JwksCacheRepository } from '../../../src/store/jwks-cache.ts'
import { ProviderLayout } from '../../../src/keycloak/provider.ts'
import { KeycloakPool } from '../../../src/keycloak/failover.ts'
import { JwksManager } from '../../../src/keycloak/jwks.ts'
import { AccessTokenVerifier, MAX_TOKEN_LENGTH } from '../../../src/keycloak/verify-token.ts'
import { createMetrics } from '../../../src/metrics/registry.ts'
import { createLogger } from '../../../src/log.ts'
import { manualClock } from '../../fixtures/clock.ts'

const ISSUER = 'https://sso.example.com/realms/acme'
const log = createLogger({ level: 'silent' })

async function setup (t: { teardown: (fn: () => void) => void }, cacheMaxEntries = 100) {
  const clock = manualClock(Date.UTC(2026, 10, 22, 12))
  const { privateKey, publicKey } = await generateKeyPair('RS256')
  const publicJwk: JWK = { ...await exportJWK(publicKey), kid: 'k1', alg: 'RS256', use: 'sig' }
  const { db } = openDatabase({ path: ':memory:' })
  t.teardown(() => db.close())
  const repository = new JwksCacheRepository(db)
  repository.save(ISSUER, { jwks: { keys: [publicJwk] }, fetchedAt: clock.now(), server: 'http://keycloak' })
  const metrics = createMetrics()
  // Keycloak disabled: every key must come from the store, and nothing is fetched.
  const layout = new ProviderLayout({ kind: 'keycloak', issuer: ISSUER, realm: 'acme', servers: ['http://127.0.0.1:9'] })
  const pool = new KeycloakPool({ servers: [{ url: 'http://127.0.0.1:9' }], layout, timeoutMs: 500, enabled: false, breaker: { enabled: true, failureThreshold: 3, cooldownMs: 60_000 }, clock, log, metrics })
  const jwks = new JwksManager({ issuer: ISSUER, repository, pool, clock, log, metrics, refreshIntervalMs: 60_000, minRefreshIntervalMs: 10_000, jwksUri: async () => `${ISSUER}/protocol/openid-connect/certs` })
  jwks.start()
  t.teardown(() => jwks.stop())
  const verifier = new AccessTokenVerifier({ jwks, issuer: ISSUER, clientIds: ['app', 'other-app'], audiences: ['https://api.example.test'], algorithms: ['RS256', 'ES256'], clockSkewSeconds: 30, cacheMaxEntries, clock, metrics })
  // As buildApp wires them.
  jwks.onKeysWithdrawn((kids) => { verifier.forgetKeys(kids) })
  const now = Math.floor(clock.now() / 1000)
  const claims = { iss: ISSUER, sub: 'user-1', aud: 'app', azp: 'app', typ: 'Bearer', iat: now, exp: now + 300 }
  const sign = async (overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key: CryptoKey | Uint8Array = privateKey): Promise<string> => {
    const payload = { ...claims, ...overrides }
    for (const [k, v] of Object.entries(overrides)) if (v === undefined) delete (payload as Record<string, unknown>)[k]
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: 'k1', typ: 'JWT', ...header } as { alg: string }).sign(key)
  }
  const counted = async (result: string): Promise<number> => {
    const metric = (await metrics.registry.getSingleMetric('gatehouse_token_verifications_total')?.get())?.values.find((v) => v.labels.result === result)
    return metric?.value ?? 0
  }
  /** Installs `keys` as a refresh would: stored, then loaded. */
  const publish = (keys: JWK[]): void => {
    repository.save(ISSUER, { jwks: { keys }, fetchedAt: clock.now(), server: 'http://keycloak' })
    jwks.load()
  }
  return { clock, verifier, sign, now, publicJwk, counted, publish, jwks }
}

t.test('a valid Keycloak access token verifies, then comes from the cache', async (t) => {
  const { verifier, sign, counted } = await setup(t)
  const token = await sign()
  const first = await verifier.verify(token)
  t.ok(first.ok)
  if (first.ok) {
    t.equal(first.cached, false)
    t.equal(first.token.claims.sub, 'user-1')
  }
  const second = await verifier.verify(token)
  t.ok(second.ok && second.cached)
  t.equal(await counted('valid'), 1)
  t.equal(await counted('cached'), 1)
})

t.test('azp alone may name the client; aud alone may name it too', async (t) => {
  const { verifier, sign } = await setup(t)
  t.ok((await verifier.verify(await sign({ aud: 'account', azp: 'app' }))).ok)
  t.ok((await verifier.verify(await sign({ aud: ['account', 'other-app'], azp: 'frontend' }))).ok)
  const neither = await verifier.verify(await sign({ aud: 'account', azp: 'frontend' }))
  t.same(neither, { ok: false, reason: 'wrong_audience', detail: 'neither aud, azp nor client_id names this client' })
})

t.test('RFC 9068 access tokens: header typ at+jwt, client_id like azp, a resource in aud', async (t) => {
  const { verifier, sign } = await setup(t)
  const rfc9068 = { typ: undefined, azp: undefined, client_id: 'app', aud: 'https://api.example.test' }
  t.ok((await verifier.verify(await sign(rfc9068, { typ: 'at+jwt' }))).ok, 'at+jwt, client_id app, the configured resource')
  t.ok((await verifier.verify(await sign(rfc9068, { typ: 'application/AT+JWT' }))).ok, 'the media type in any case, with application/')
  t.ok((await verifier.verify(await sign({ ...rfc9068, aud: 'https://elsewhere.example.test' }, { typ: 'at+jwt' }))).ok, 'client_id alone names this client')
  t.match(await verifier.verify(await sign({ ...rfc9068, client_id: 'frontend', aud: 'https://elsewhere.example.test' }, { typ: 'at+jwt' })), { ok: false, reason: 'wrong_audience' })
  t.match(await verifier.verify(await sign({ ...rfc9068, client_id: 'frontend' }, { typ: 'at+jwt' })), { ok: true }, 'a resource named in tokens.audiences, for any client')
  t.match(await verifier.verify(await sign({ typ: 'ID' }, { typ: 'JWT' })), { ok: false, reason: 'wrong_type' }, 'an ID token is no access token')
  t.match(await verifier.verify(await sign(rfc9068, { typ: 'JWT' })), { ok: false, reason: 'wrong_type' }, 'neither the header nor the claim says access token')
  t.match(await verifier.verify(await sign({ typ: 'Refresh' }, { typ: 'at+jwt+evil' })), { ok: false, reason: 'wrong_type' })
})

t.test('each kind of bad token is refused with its own reason', async (t) => {
  const { verifier, sign, now, publicJwk } = await setup(t)
  const { privateKey: otherKey } = await generateKeyPair('RS256')
  const expectReason = async (token: string, reason: string, label: string): Promise<void> => {
    const outcome = await verifier.verify(token)
    t.equal(outcome.ok ? 'ok' : outcome.reason, reason, label)
  }
  await expectReason(await sign({ exp: now - 31 }), 'expired', 'expired beyond the skew')
  await expectReason(await sign({ nbf: now + 31 }), 'not_yet_valid', 'nbf beyond the skew')
  await expectReason(await sign({ iss: 'https://evil.example/realms/acme' }), 'wrong_issuer', 'another issuer')
  await expectReason(await sign({ typ: 'ID' }), 'wrong_type', 'an ID token')
  await expectReason(await sign({ typ: 'Refresh' }), 'wrong_type', 'a refresh token')
  await expectReason(await sign({ typ: undefined }), 'wrong_type', 'no typ claim')
  await expectReason(await sign({ sub: undefined }), 'missing_claim', 'no sub')
  await expectReason(await sign({ exp: undefined }), 'missing_claim', 'no exp')
  await expectReason(await sign({}, {}, otherKey), 'invalid_signature', 'another key with the same kid')
  await expectReason(await sign({}, { kid: 'k9' }, otherKey), 'unknown_kid', 'an unknown kid while keycloak is unreachable')
  await expectReason('not.a.jwt', 'malformed', 'garbage')
  await expectReason('x'.repeat(MAX_TOKEN_LENGTH + 1), 'too_large', 'oversized')

  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url')
  const body = { iss: ISSUER, sub: 'user-1', aud: 'app', typ: 'Bearer', iat: now, exp: now + 300 }
  await expectReason(`${b64({ alg: 'none', kid: 'k1' })}.${b64(body)}.`, 'alg_not_allowed', 'alg none')
  // The classic confusion: an HMAC signed with the RSA public key's bytes.
  const hsInput = `${b64({ alg: 'HS256', kid: 'k1' })}.${b64(body)}`
  const hsSig = createHmac('sha256', JSON.stringify(publicJwk)).update(hsInput).digest('base64url')
  await expectReason(`${hsInput}.${hsSig}`, 'alg_not_allowed', 'HS256 with the public key as secret')
  const { privateKey: rs384 } = await generateKeyPair('RS384')
  await expectReason(await sign({}, { alg: 'RS384' }, rs384), 'alg_not_allowed', 'an algorithm not in the allow-list')
})

t.test('clock skew is tolerated on exp, nbf and iat', async (t) => {
  const { verifier, sign, now } = await setup(t)
  t.ok((await verifier.verify(await sign({ exp: now - 20 }))).ok, 'expired 20 s ago, skew 30 s')
  t.ok((await verifier.verify(await sign({ nbf: now + 20 }))).ok, 'valid in 20 s, skew 30 s')
  t.ok((await verifier.verify(await sign({ iat: now + 30 }))).ok, 'issued 30 s ahead, skew 30 s')
  t.ok((await verifier.verify(await sign({ iat: undefined }))).ok, 'no iat at all: exp bounds the token')
})

t.test('a token issued further in the future than the skew is refused', async (t) => {
  const { verifier, sign, now, counted } = await setup(t)
  const outcome = await verifier.verify(await sign({ iat: now + 31, exp: now + 600 }))
  t.same(outcome, { ok: false, reason: 'issued_in_future', detail: 'iat is in the future' })
  t.equal(verifier.cacheSize, 0, 'not remembered')
  t.equal(await counted('issued_in_future'), 1)
  const notNumeric = await verifier.verify(await sign({ iat: 'tomorrow' }))
  t.equal(notNumeric.ok ? 'ok' : notNumeric.reason, 'malformed', 'a non-numeric iat is malformed')
})

t.test('tokens of a withdrawn key are forgotten at once; tokens of keys still published stay', async (t) => {
  const { verifier, sign, publicJwk, publish, counted } = await setup(t)
  const second = await generateKeyPair('RS256')
  const secondJwk: JWK = { ...await exportJWK(second.publicKey), kid: 'k2', alg: 'RS256', use: 'sig' }
  publish([publicJwk, secondJwk])
  const old = await sign()
  const current = await sign({}, { kid: 'k2' }, second.privateKey)
  t.ok((await verifier.verify(old)).ok)
  t.ok((await verifier.verify(current)).ok)
  t.equal(verifier.cacheSize, 2)

  publish([secondJwk])
  t.equal(verifier.cacheSize, 1, 'only the token of the withdrawn kid went')
  t.equal(verifier.remembered(old), null)
  const again = await verifier.verify(old)
  t.equal(again.ok ? 'ok' : again.reason, 'unknown_kid', 'the old token is verified afresh, and fails')
  const kept = await verifier.verify(current)
  t.ok(kept.ok && kept.cached, 'the other key\'s token is still a cache hit')
  t.equal(await counted('valid'), 2, 'nothing was re-verified but the withdrawn one')
})

t.test('a kid whose key material changes counts as withdrawn', async (t) => {
  const { verifier, sign, publish } = await setup(t)
  const token = await sign()
  t.ok((await verifier.verify(token)).ok)
  const other = await generateKeyPair('RS256')
  publish([{ ...await exportJWK(other.publicKey), kid: 'k1', alg: 'RS256', use: 'sig' }])
  t.equal(verifier.cacheSize, 0)
  const outcome = await verifier.verify(token)
  t.equal(outcome.ok ? 'ok' : outcome.reason, 'invalid_signature')
})

t.test('a token whose verification spans a withdrawal of its key is not remembered', async (t) => {
  const { verifier, sign, publish } = await setup(t)
  const token = await sign()
  const other = await generateKeyPair('RS256')
  const otherJwk: JWK = { ...await exportJWK(other.publicKey), kid: 'k9', alg: 'RS256', use: 'sig' }
  // verify() takes the key set in use synchronously, then awaits the signature check: the
  // withdrawal lands, synchronously, in between.
  const pending = verifier.verify(token)
  publish([otherJwk])
  const outcome = await pending
  t.equal(outcome.ok ? 'ok' : outcome.reason, 'unknown_kid', 'verified again against the keys in use')
  t.equal(verifier.cacheSize, 0)
})

t.test('a refresh that withdraws nothing forgets nothing', async (t) => {
  const { verifier, sign, publicJwk, publish } = await setup(t)
  const token = await sign()
  t.ok((await verifier.verify(token)).ok)
  publish([{ ...publicJwk }])
  const hit = await verifier.verify(token)
  t.ok(hit.ok && hit.cached)
})

t.test('a remembered token is never used past its exp', async (t) => {
  const { verifier, sign, clock, now } = await setup(t)
  const token = await sign({ exp: now + 60 })
  t.ok((await verifier.verify(token)).ok)
  t.equal(verifier.cacheSize, 1)
  clock.advance(89_000)
  const stillValid = await verifier.verify(token)
  t.ok(stillValid.ok && stillValid.cached, 'inside exp + skew')
  clock.advance(2000)
  const outcome = await verifier.verify(token)
  t.equal(outcome.ok ? 'ok' : outcome.reason, 'expired')
  t.equal(verifier.cacheSize, 0, 'the expired entry was dropped')
})

t.test('the cache is bounded by count and can be turned off', async (t) => {
  const bounded = await setup(t, 2)
  for (let i = 0; i < 5; i++) await bounded.verifier.verify(await bounded.sign({ jti: String(i) }))
  t.equal(bounded.verifier.cacheSize, 2)
  const off = await setup(t, 0)
  const token = await off.sign()
  await off.verifier.verify(token)
  const again = await off.verifier.verify(token)
  t.ok(again.ok && !again.cached)
})

t.test('HMAC or none can never be configured', async (t) => {
  const { verifier: _v } = await setup(t)
  t.throws(() => new AccessTokenVerifier({ algorithms: ['HS256'] } as unknown as ConstructorParameters<typeof AccessTokenVerifier>[0]), TypeError)
})

t.test('a token that copies a remembered signature but changes the payload is not a cache hit', async (t) => {
  const { verifier, sign } = await setup(t)
  const genuine = await sign({ sub: 'user-1' })
  t.ok((await verifier.verify(genuine)).ok)
  const [header, , signature] = genuine.split('.')
  const forgedPayload = Buffer.from(JSON.stringify({ iss: ISSUER, sub: 'admin', aud: 'app', typ: 'Bearer', exp: 9_999_999_999 })).toString('base64url')
  const forged = `${header}.${forgedPayload}.${signature}`
  t.equal(verifier.remembered(forged), null)
  const outcome = await verifier.verify(forged)
  t.same(outcome.ok ? 'ok' : outcome.reason, 'invalid_signature')
  const again = await verifier.verify(genuine)
  t.ok(again.ok && again.cached, 'the genuine token is still remembered')
})
