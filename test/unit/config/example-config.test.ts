import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../../../src/config/load.ts'

const EXAMPLE = fileURLToPath(new URL('../../../config.yaml', import.meta.url))
const DOCKERFILE = readFileSync(new URL('../../../Dockerfile', import.meta.url), 'utf8')
const SECRETS = { GATEHOUSE_ENCRYPTION_KEY: '00'.repeat(32), GATEHOUSE_COOKIE_KEY: 'example-cookie-key-example-cookie-key', KEYCLOAK_CLIENT_SECRET: 'example-client-secret' }

/** The `ENV` variables of the Dockerfile's last stage (the runtime image). */
function imageEnv (): Record<string, string> {
  const runtime = DOCKERFILE.slice(DOCKERFILE.lastIndexOf('\nFROM '))
  const env: Record<string, string> = {}
  for (const block of runtime.matchAll(/^ENV ((?:.*\\\n)*.*)$/gm)) {
    for (const pair of (block[1] ?? '').replace(/\\\n/g, ' ').trim().split(/\s+/)) {
      const [name, ...value] = pair.split('=')
      if (name !== undefined) env[name] = value.join('=')
    }
  }
  return env
}

t.test('config.yaml binds the admin listener to GATEHOUSE_ADMIN_HOST, loopback when unset', async (t) => {
  t.equal(loadConfig({ path: EXAMPLE, env: SECRETS }).admin.host, '127.0.0.1')
  t.equal(loadConfig({ path: EXAMPLE, env: { ...SECRETS, GATEHOUSE_ADMIN_HOST: '::' } }).admin.host, '::')
})

t.test('the image runs config.yaml with the admin listener on every interface and the database on its volume', async (t) => {
  const env = imageEnv()
  t.equal(env.GATEHOUSE_CONFIG, '/etc/gatehouse/config.yaml')
  const config = loadConfig({ path: EXAMPLE, env: { ...env, ...SECRETS } })
  t.equal(config.admin.host, '0.0.0.0', 'kubelet probes and Prometheus reach it on the pod address')
  t.equal(config.admin.port, 9180)
  t.equal(config.database.path, '/var/lib/gatehouse/gatehouse.db')
  t.match(DOCKERFILE, 'VOLUME ["/var/lib/gatehouse"]')
})
