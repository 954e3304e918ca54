import t from 'tap'
import { readFileSync } from 'node:fs'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, startGatehouse, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'
import { grpcClient, type DecodedCheckResponse } from '../fixtures/grpc-client.ts'

// Two bypasses of the shipped policies found while building issue 13, through the real sidecar.
//
// 1. Double encoding. `/%2561dmin/users` was normalised to itself (`%25` is not unreserved, so
//    it stayed encoded), matched no rule and got the default (authenticated): bob, no admin,
//    was let through, and an app or proxy that decodes twice serves it as `/admin/users`.
//    Before the fix: 200 and the upstream got the request. Now: 400 bad_path, nothing sent.
// 2. A line separator over gRPC. The first-cut matcher compiled `/admin/**` to
//    `^/admin(?:/.*)?$`, and `.` matches no U+2028 or U+2029; a CheckRequest's path is any
//    Unicode string, so `/admin/\u2028` matched no rule and got the default: OK for bob, and an
//    OK for `/actuator/\u2028` even though every spelling of it is denied. (Over HTTP/1 the
//    path is read as latin1 and cannot hold them.) Before the fix: OK. Now the rules' own
//    decisions: PERMISSION_DENIED. (`node -e "/^\/admin(?:\/.*)?$/.test('/admin/\u2028')"`
//    prints false: the old expression, evaluated.)

const SHIPPED_POLICY = readFileSync(new URL('../../policies/app.yaml', import.meta.url), 'utf8')
const OK = 0
const PERMISSION_DENIED = 7

const standin = await startKeycloakStandin()
t.teardown(() => standin.close())
const upstream = await startEchoUpstream()
t.teardown(() => upstream.close())
const gatehouse = await startGatehouse(t, writeConfig(t.testdir(), { ...keycloakSettings(standin, upstream.url), grpc: { enabled: true, host: '127.0.0.1', port: 0 } }, { 'app.yaml': SHIPPED_POLICY }))
await gatehouse.app.keycloak.jwks.refresh('manual')
const bob = (await standin.passwordGrant('bob', 'bob-password')).access_token
const alice = (await standin.passwordGrant('alice', 'alice-password')).access_token

t.test('a double-encoded path is a 400 and reaches nothing', async (t) => {
  for (const path of ['/%2561dmin/users', '/%2541DMIN', '/public/%252e%252e/admin', '/admin%252fusers', '/%25%36%31dmin']) {
    const before = upstream.requests.length
    const res = await rawRequest(gatehouse.proxyUrl, path, { headers: { authorization: `Bearer ${bob}` } })
    t.equal(res.status, 400, path)
    t.equal(JSON.parse(res.body).error_description, 'path contains a double-encoded escape (%25 followed by hex digits)', path)
    t.equal(upstream.requests.length, before, `${path}: the upstream got nothing`)
  }
  const plain = await rawRequest(gatehouse.proxyUrl, '/sale/50%25-off', { headers: { authorization: `Bearer ${bob}` } })
  t.equal(plain.status, 200, 'an encoded % that cannot become another escape passes')
  t.equal(upstream.requests.at(-1)?.url, '/sale/50%25-off')
})

t.test('a line separator in a gRPC check path no longer escapes the rule', async (t) => {
  const client = grpcClient(gatehouse.urls.grpc as string)
  t.teardown(() => client.close())
  const check = async (path: string, token: string): Promise<number | undefined> => {
    const result = await client.check({ attributes: { request: { http: { method: 'GET', path, host: 'app.example.test', scheme: 'https', headers: { authorization: `Bearer ${token}` } } } } })
    t.equal(result.code, OK, `${JSON.stringify(path)}: the call succeeds`)
    const status = (result.response as DecodedCheckResponse).status?.code
    return status ?? OK
  }
  for (const separator of ['\u2028', '\u2029']) {
    t.equal(await check(`/admin/${separator}`, bob), PERMISSION_DENIED, `admin area: ${JSON.stringify(separator)}, bob`)
    t.equal(await check(`/admin/${separator}`, alice), OK, 'the rule decides: an admin passes')
    t.equal(await check(`/actuator/${separator}`, alice), PERMISSION_DENIED, `denied internals: ${JSON.stringify(separator)}`)
    t.equal(await check(`/ADMIN/x${separator}`, bob), PERMISSION_DENIED, 'another case spelling too')
  }
})
