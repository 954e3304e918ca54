import t from 'tap'
// Fastify compiles `trustProxy` lists with this package at start-up; it is what serve runs.
import { compile } from '@fastify/proxy-addr'
import { parseConfig } from '../../../src/config/load.ts'
import { trustProxyEntryProblem } from '../../../src/config/validate.ts'
import { ConfigError } from '../../../src/errors.ts'

const SECRETS = `secrets: { encryption_keys: ['${'00'.repeat(32)}'], cookie_keys: [test-cookie-key-test-cookie-key-0000] }`
const BASE = `
${SECRETS}
upstream: { url: 'http://127.0.0.1:8080' }
keycloak: { issuer: 'https://sso.example.com/realms/acme', server: 'http://keycloak:8080', client_id: app }
`

function fastifyAccepts (entry: string): boolean {
  try {
    compile([entry])
    return true
  } catch {
    return false
  }
}

const ACCEPTED = [
  '10.0.0.1', '10.0.0.0/8', '192.168.1.0/24', '172.16.0.0/255.240.0.0', '203.0.113.7/32', '10.0.0.0/1',
  '::1', 'fd00::/8', '2001:db8::/128', '::ffff:10.0.0.1', '::ffff:10.0.0.0/104', 'fe80::1%eth0',
  'loopback', 'linklocal', 'uniquelocal', '10.0.0.0/08'
]

const REFUSED: Array<[string, string]> = [
  ['999.1.1.1/99', 'an IP address, a CIDR range (10.0.0.0/8, fd00::/8), an IPv4 address/netmask, or one of loopback, linklocal, uniquelocal'],
  ['999.1.1.1', 'an IP address, a CIDR range (10.0.0.0/8, fd00::/8), an IPv4 address/netmask, or one of loopback, linklocal, uniquelocal'],
  ['10.0.0.0/33', 'a prefix length from 1 to 32 after the /'],
  ['fd00::/129', 'a prefix length from 1 to 128 after the /'],
  ['0.0.0.0/0', 'a prefix length from 1 to 32 after the / (use true to trust every peer)'],
  ['10.0.0.0/', 'a prefix length from 1 to 32 after the /'],
  ['10.0.0.0/8 ', 'a prefix length from 1 to 32 after the /'],
  ['10.0.0.0/255.0.255.0', 'a netmask of contiguous ones after the / (255.255.0.0), or a prefix length from 1 to 32'],
  ['10.0.0.0/0.0.0.0', 'a netmask of contiguous ones after the / (255.255.0.0), or a prefix length from 1 to 32'],
  ['fd00::/255.0.0.0', 'a prefix length from 1 to 128 after the /'],
  ['Loopback', 'an IP address, a CIDR range (10.0.0.0/8, fd00::/8), an IPv4 address/netmask, or one of loopback, linklocal, uniquelocal'],
  ['proxy.internal', 'an IP address, a CIDR range (10.0.0.0/8, fd00::/8), an IPv4 address/netmask, or one of loopback, linklocal, uniquelocal'],
  ['10.0.0.0/8,10.1.0.0/16', 'one address or range per list item ([a, b], not "a,b")']
]

t.test('every trust_proxy entry validate accepts is one Fastify accepts', async (t) => {
  for (const entry of ACCEPTED) {
    t.equal(trustProxyEntryProblem(entry), null, `${entry} is accepted`)
    t.ok(fastifyAccepts(entry), `${entry}: and Fastify takes it`)
  }
})

t.test('entries Fastify would refuse at start-up are refused with what was expected', async (t) => {
  for (const [entry, expected] of REFUSED) {
    t.equal(trustProxyEntryProblem(entry), expected, entry)
  }
  for (const entry of ['999.1.1.1/99', '10.0.0.0/33', 'fd00::/129', '0.0.0.0/0', '10.0.0.0/255.0.255.0', 'proxy.internal']) {
    t.notOk(fastifyAccepts(entry), `${entry}: Fastify refuses it too, so serve would have exited`)
  }
})

t.test('the config loader reports each bad entry with its full key path, overlays included', async (t) => {
  const text = `${BASE}
server:
  trust_proxy: [10.0.0.0/8, 999.1.1.1/99, loopback, 10.0.0.0/33]
environments:
  staging:
    server:
      trust_proxy: [fd00::/200]
`
  let problems: string[] = []
  try {
    parseConfig(text, { path: 'c.yaml', env: {} })
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    problems = err.problems.map((p) => `${p.path}: expected ${p.expected}, received ${p.received}`)
  }
  t.same(problems, [
    'server.trust_proxy[1]: expected an IP address, a CIDR range (10.0.0.0/8, fd00::/8), an IPv4 address/netmask, or one of loopback, linklocal, uniquelocal, received string "999.1.1.1/99"',
    'server.trust_proxy[3]: expected a prefix length from 1 to 32 after the /, received string "10.0.0.0/33"',
    'environments.staging.server.trust_proxy[0]: expected a prefix length from 1 to 128 after the /, received string "fd00::/200"'
  ])
  const good = parseConfig(`${BASE}\nserver: { trust_proxy: [loopback, 10.0.0.0/8, 'fd00::/8'] }\n`, { path: 'c.yaml', env: {} })
  t.same(good.server.trust_proxy, ['loopback', '10.0.0.0/8', 'fd00::/8'])
  t.equal(parseConfig(`${BASE}\nserver: { trust_proxy: true }\n`, { path: 'c.yaml', env: {} }).server.trust_proxy, true)
})
