// The container's run-time constraints without a container engine (none on these machines):
// Gatehouse serves as an unprivileged user (uid 1000, the image's `node`) with every mount of
// the file system read-only except its database directory and /tmp, as
// `docker run --read-only --tmpfs /tmp -v data:/var/lib/gatehouse` and the Kubernetes
// Deployment's readOnlyRootFilesystem give it. A private mount namespace (unshare) remounts
// the mounts read-only for this one process tree; setpriv drops to uid 1000. It runs the
// TypeScript sources through tsx, not the image's dist/, and needs root (CAP_SYS_ADMIN).
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { chownSync, existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { requireProgram } from '../fixtures/system-programs.ts'
import { startKeycloakStandin } from '../fixtures/keycloak-standin.ts'
import { startEchoUpstream } from '../fixtures/upstream.ts'
import { keycloakSettings, writeConfig } from '../fixtures/gatehouse.ts'
import { rawRequest } from '../fixtures/http-client.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const MAIN = join(ROOT, 'src/main.ts')
const UID = 1000

// Inside the new mount namespace, as root: the data directory and a temporary directory (the
// image's tmpfs /tmp, here TMPDIR) stay writable as bind mounts of their own, every other mount
// is remounted read-only, the read-only root is proved by a write that must fail, and then the
// user switch and Gatehouse. Nothing is mounted over /tmp itself: the checkout under test may
// live there (a CI clone in /tmp), and a mount on /tmp would hide it.
const SCRIPT = `set -eu
mount --make-rprivate /
mount --bind "$GH_DATA" "$GH_DATA"
mount --bind "$GH_TMP" "$GH_TMP"
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$GH_TMP"|"$GH_DATA") continue ;; esac
  mount -o remount,bind,ro "$m"
done
if touch "$GH_PROBE" 2>/dev/null; then echo "read-only-root: $GH_PROBE is writable" >&2; exit 90; fi
exec "$GH_SETPRIV" --reuid=${UID} --regid=${UID} --clear-groups --inh-caps=-all -- "$GH_NODE" --import tsx "$GH_MAIN" serve -c "$GH_CONFIG"
`

t.test('Gatehouse serves as uid 1000 on a read-only file system, writing only its database directory and its temporary directory', async (t) => {
  const unshare = requireProgram(t, 'unshare')
  const setpriv = requireProgram(t, 'setpriv')
  if (unshare === null || setpriv === null) return
  if (process.getuid?.() !== 0) {
    const line = 'read-only-root: needs root (CAP_SYS_ADMIN) for a private mount namespace; run the tests as root'
    if (process.env.CI === 'true') t.fail(`${line}; CI=true runs every test, so this is a failure`)
    else t.pass('root', { skip: line })
    return
  }
  const standin = await startKeycloakStandin()
  t.teardown(() => standin.close())
  const upstream = await startEchoUpstream()
  t.teardown(() => upstream.close())
  const dir = t.testdir({ data: {}, tmp: {} })
  const data = join(dir, 'data')
  // The image's `chown node:node /var/lib/gatehouse`, and a tmpfs the user can write.
  chownSync(data, UID, UID)
  chownSync(join(dir, 'tmp'), UID, UID)
  writeConfig(dir, {
    ...keycloakSettings(standin, upstream.url),
    database: { path: join(data, 'gatehouse.db') },
    log: { level: 'info' }
  }, { 'app.yaml': 'rules:\n  - paths: [/public/**]\n    allow: public\n' })

  const child: ChildProcess = spawn(unshare, ['--mount', '--propagation', 'private', 'sh', '-c', SCRIPT], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      // The image's HOME (/home/node) is read-only too; nothing may need it.
      HOME: '/nonexistent',
      GH_DATA: data,
      GH_TMP: join(dir, 'tmp'),
      TMPDIR: join(dir, 'tmp'),
      GH_PROBE: join(dir, 'probe'),
      GH_SETPRIV: setpriv,
      GH_NODE: process.execPath,
      GH_MAIN: MAIN,
      GH_CONFIG: join(dir, 'config.yaml')
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const listening = new Promise<{ proxy: string, admin: string }>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString()
      const line = stdout.split('\n').find((l) => l.includes('"gatehouse listening"'))
      if (line !== undefined) resolve(JSON.parse(line) as { proxy: string, admin: string })
    })
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
    void exited.then(({ code, signal }) => reject(new Error(`exited ${code ?? signal} before listening:\n${stderr}\n${stdout}`)))
  })
  const urls = await listening

  t.equal((await rawRequest(urls.admin, '/readyz')).status, 200, 'ready')
  t.equal((await rawRequest(urls.proxy, '/public/x')).status, 200, 'an allowed request reaches the app')
  t.equal((await rawRequest(urls.proxy, '/private')).status, 401, 'a denied one does not')
  const token = await standin.mintAccessToken({})
  t.equal((await rawRequest(urls.proxy, '/private', { headers: { authorization: `Bearer ${token}` } })).status, 200, 'a bearer token is verified against the fetched JWKS')
  const status = await (await fetch(`${urls.admin}/status`)).json() as { mode: string }
  t.equal(status.mode, 'normal')

  const db = statSync(join(data, 'gatehouse.db'))
  t.equal(db.uid, UID, 'the database was created by uid 1000')
  t.notOk(existsSync(join(dir, 'probe')), 'the read-only probe wrote nothing')
  t.notMatch(stdout + stderr, /EROFS|read-only file system|EACCES/i, 'no write was refused')

  child.kill('SIGTERM')
  const { code } = await exited
  t.equal(code, 0, 'SIGTERM stops it cleanly')
  t.match(stdout, '"shutting down"')
})
