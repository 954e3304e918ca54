import t from 'tap'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments } from 'yaml'
import { loadConfig } from '../../../src/config/load.ts'
import { ConfigError } from '../../../src/errors.ts'
import { loadPolicies } from '../../../src/authz/policy.ts'
import type { Config } from '../../../src/config/schema.ts'

// deploy/kubernetes/, checked without a cluster: every manifest parsed; the ConfigMap's
// config.yaml loaded by Gatehouse's own loader with the environment the Deployment gives the
// container (Secret values included), exactly as `serve` in the pod would; and every port,
// probe, mount, selector and policy held to that configuration. No kubectl or API server runs
// here, so field names are not checked against the Kubernetes OpenAPI schema.

// Manifests are read as untyped trees: typing all of Kubernetes here would only restate it.
type Obj = Record<string, any>
const DIR = fileURLToPath(new URL('../../../deploy/kubernetes/', import.meta.url))
const DOCKERFILE = readFileSync(new URL('../../../Dockerfile', import.meta.url), 'utf8')
const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml')).sort()
const objects: Array<{ file: string, obj: Obj }> = files.flatMap((file) => parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((doc) => {
  if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`)
  return { file, obj: doc.toJS() as Obj }
}))
const one = (kind: string): Obj => {
  const found = objects.filter((o) => o.obj.kind === kind)
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`)
  return (found[0] as { obj: Obj }).obj
}
const deployment = one('Deployment')
const configMap = one('ConfigMap')
const secret = one('Secret')
const service = one('Service')
const policy = one('NetworkPolicy')
const pvc = one('PersistentVolumeClaim')
const pod = deployment.spec.template.spec
const container = (name: string): Obj => pod.containers.find((c: Obj) => c.name === name)
const gatehouse = container('gatehouse')
const app = container('app')
const portOf = (c: Obj, name: string): number | undefined => c.ports.find((p: Obj) => p.name === name)?.containerPort

// What a real Secret would hold: the shipped one carries placeholders that must be replaced.
const REAL_SECRETS: Record<string, string> = {
  GATEHOUSE_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
  GATEHOUSE_COOKIE_KEY: 'k8s-test-cookie-key-k8s-test-cookie-key',
  KEYCLOAK_CLIENT_SECRET: 'k8s-test-client-secret'
}

/** The container's environment, Secret references resolved from `secretData`. */
function containerEnv (secretData: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {}
  for (const e of gatehouse.env as Obj[]) {
    if (e.value !== undefined) env[e.name] = String(e.value)
    else if (e.valueFrom?.secretKeyRef !== undefined) {
      const ref = e.valueFrom.secretKeyRef
      if (ref.name !== secret.metadata.name) throw new Error(`${e.name} reads Secret ${ref.name}, not ${secret.metadata.name}`)
      const value = secretData[ref.key]
      if (value === undefined) throw new Error(`${e.name}: Secret ${ref.name} has no key ${ref.key}`)
      env[e.name] = value
    }
  }
  return env
}

/** The config volume as the kubelet writes it (items → paths), under `root`; returns config.yaml's path. */
function mountConfig (root: string, env: Record<string, string>): string {
  const configPath = env.GATEHOUSE_CONFIG as string
  const mount = gatehouse.volumeMounts.find((m: Obj) => m.mountPath === dirname(configPath))
  const volume = pod.volumes.find((v: Obj) => v.name === mount.name)
  if (volume.configMap?.name !== configMap.metadata.name) throw new Error(`${mount.mountPath} is not the ConfigMap ${configMap.metadata.name}`)
  for (const item of volume.configMap.items as Obj[]) {
    const target = join(root, item.path)
    mkdirSync(dirname(target), { recursive: true })
    writeFileSync(target, configMap.data[item.key])
  }
  return join(root, posix.relative(mount.mountPath, configPath))
}

function load (secretData: Record<string, string>, root: string): Config {
  const env = containerEnv(secretData)
  return loadConfig({ path: mountConfig(root, env), env })
}

t.test('every file parses; kustomization.yaml lists every manifest; one app name labels them all', async (t) => {
  const kustomization = objects.find((o) => o.file === 'kustomization.yaml')?.obj as Obj
  t.same([...kustomization.resources].sort(), files.filter((f) => f !== 'kustomization.yaml'))
  for (const { file, obj } of objects.filter((o) => o.file !== 'kustomization.yaml')) {
    t.match(obj, { apiVersion: String, kind: String, metadata: { name: String } }, `${file}: apiVersion, kind, name`)
    t.equal(obj.metadata.labels?.['app.kubernetes.io/name'], 'my-app', `${file}: labelled`)
  }
})

t.test('the ConfigMap\'s config.yaml loads, with the Deployment\'s environment and a real Secret, as serve would', async (t) => {
  const config = load(REAL_SECRETS, t.testdir())
  t.equal(config.environment, 'production', 'GATEHOUSE_ENV picks the production overlay')
  t.equal(config.secrets.encryption_keys.length, 1)
  t.equal(config.keycloak.client_secret, REAL_SECRETS.KEYCLOAK_CLIENT_SECRET)
  t.equal(config.server.port, portOf(gatehouse, 'proxy'), 'server.port is the container port named proxy')
  t.equal(config.admin.port, portOf(gatehouse, 'admin'), 'admin.port is the container port named admin')
  t.equal(config.admin.host, '0.0.0.0', 'the admin listener is on the pod address, for probes and Prometheus')
  const upstream = new URL(config.upstream.url)
  t.equal(upstream.hostname, '127.0.0.1', 'the app is reached over the pod\'s loopback')
  t.equal(Number(upstream.port), portOf(app, 'app'), 'upstream.url is the app container\'s port')
  const dataMount = gatehouse.volumeMounts.find((m: Obj) => m.name === 'data')
  t.equal(dirname(config.database.path), dataMount.mountPath, 'the database is on the data volume')
  t.ok(pod.terminationGracePeriodSeconds * 1000 > config.server.shutdown_timeout_ms, 'Kubernetes waits longer than Gatehouse\'s own drain before SIGKILL')
  const rules = loadPolicies(join(config.base_dir, config.policies.dir), config.policies.default)
  t.ok(rules.rules.length >= 3, 'the policies mounted beside it load')
})

t.test('every ${VAR} the config reads is given by the Deployment, and every Secret key is used', async (t) => {
  const text = configMap.data['config.yaml'] as string
  const referenced = [...text.matchAll(/\$\{([A-Z_][A-Z0-9_]*)(:-[^}]*)?\}/g)].filter((m) => m[2] === undefined).map((m) => m[1] as string)
  const given = new Set((gatehouse.env as Obj[]).map((e) => e.name as string))
  for (const name of referenced) t.ok(given.has(name), `${name} is set in the container`)
  const used = new Set((gatehouse.env as Obj[]).flatMap((e) => e.valueFrom?.secretKeyRef?.key ?? []))
  t.same(Object.keys(secret.stringData).sort(), [...used].sort(), 'the Secret holds exactly the keys the container reads')
  t.equal(gatehouse.env.find((e: Obj) => e.name === 'GATEHOUSE_CONFIG')?.value, '/etc/gatehouse/config.yaml', 'the image\'s own GATEHOUSE_CONFIG')
  t.match(DOCKERFILE, 'GATEHOUSE_CONFIG=/etc/gatehouse/config.yaml')
})

t.test('the Secret as shipped is refused: its placeholders are not keys, so nobody runs with them', async (t) => {
  const err = (() => {
    try {
      load(secret.stringData, t.testdir())
    } catch (e) { return e }
    return null
  })()
  t.ok(err instanceof ConfigError)
  const paths = (err as ConfigError).problems.map((p) => p.path)
  t.ok(paths.includes('secrets.encryption_keys[0]'), 'secrets.encryption_keys[0] is named')
  t.ok(paths.includes('secrets.cookie_keys[0]'), 'secrets.cookie_keys[0] is named')
})

t.test('probes on the admin listener: readiness /readyz, liveness and start-up /healthz', async (t) => {
  t.same(gatehouse.readinessProbe.httpGet, { path: '/readyz', port: 'admin' })
  t.same(gatehouse.livenessProbe.httpGet, { path: '/healthz', port: 'admin' })
  t.same(gatehouse.startupProbe.httpGet, { path: '/healthz', port: 'admin' })
  const routes = readFileSync(new URL('../../../src/admin/plugin.ts', import.meta.url), 'utf8')
  t.match(routes, "fastify.get('/healthz'")
  t.match(routes, "fastify.get('/readyz'")
})

t.test('non-root, read-only root file system, no capabilities; writable only the data volume and /tmp', async (t) => {
  t.equal(pod.securityContext.runAsNonRoot, true)
  t.equal(pod.automountServiceAccountToken, false, 'Gatehouse never calls the Kubernetes API')
  for (const c of [gatehouse, app]) {
    t.match(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } }, `${c.name} container`)
  }
  t.equal(gatehouse.securityContext.runAsUser, 1000)
  t.match(DOCKERFILE, /\nUSER 1000:1000\n/, 'the image runs as the base image\'s node user, uid and gid 1000')
  t.equal(pod.securityContext.fsGroup, 1000, 'the volume is made writable for it')
  const writable = (gatehouse.volumeMounts as Obj[]).filter((m) => m.readOnly !== true).map((m) => m.mountPath).sort()
  t.same(writable, ['/tmp', '/var/lib/gatehouse'])
  t.match(DOCKERFILE, 'VOLUME ["/var/lib/gatehouse"]')
})

t.test('the data volume: one replica, Recreate, on a ReadWriteOnce claim', async (t) => {
  const data = pod.volumes.find((v: Obj) => v.name === 'data')
  t.equal(data.persistentVolumeClaim.claimName, pvc.metadata.name)
  t.same(pvc.spec.accessModes, ['ReadWriteOnce'])
  t.equal(deployment.spec.replicas, 1, 'one SQLite writer')
  t.equal(deployment.spec.strategy.type, 'Recreate', 'a rolling update would need the volume on two pods at once')
  t.match(readFileSync(join(DIR, 'pvc.yaml'), 'utf8'), /emptyDir[\s\S]*trade-off|trade-off[\s\S]*emptyDir/, 'the emptyDir alternative and its trade-off are explained')
})

t.test('the Service reaches Gatehouse\'s proxy port only', async (t) => {
  t.same(service.spec.selector, deployment.spec.selector.matchLabels)
  t.same(service.spec.ports.map((p: Obj) => p.targetPort), ['proxy'])
  t.ok(portOf(gatehouse, 'proxy') !== undefined)
})

t.test('the NetworkPolicy: anyone to the proxy port, Prometheus alone to the admin port, nobody to the app', async (t) => {
  t.same(policy.spec.podSelector.matchLabels, deployment.spec.template.metadata.labels)
  t.same(policy.spec.policyTypes, ['Ingress'])
  const byPort = new Map<string, Obj>((policy.spec.ingress as Obj[]).flatMap((rule) => (rule.ports as Obj[]).map((p) => [String(p.port), rule] as const)))
  t.same([...byPort.keys()].sort(), ['admin', 'proxy'], 'no rule admits the app\'s port')
  for (const name of byPort.keys()) t.ok(portOf(gatehouse, name) !== undefined, `${name} is a named port of the gatehouse container`)
  t.equal(byPort.get('proxy')?.from, undefined, 'clients come from anywhere')
  t.match(byPort.get('admin')?.from, [{ namespaceSelector: { matchLabels: Object }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } } }])
  const scrape = readFileSync(new URL('../../../deploy/prometheus/prometheus.yaml', import.meta.url), 'utf8')
  t.match(scrape, 'regex: gatehouse;admin', 'Prometheus scrapes the gatehouse container\'s port named admin')
})
