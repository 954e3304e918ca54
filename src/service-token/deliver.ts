import { execFile } from 'node:child_process'
import { chmodSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { ServiceTokensConfig } from '../config/schema.ts'

/** Where an automatically rotated token goes (`service_tokens.auto_rotate`). */
export interface Delivery {
  /** A person-readable description for logs: which file, which program. */
  describe: string
  deliver: (token: { name: string, id: string, expiresAt: number, secret: string }) => Promise<void>
}

/**
 * The delivery `service_tokens.auto_rotate` configures (a file, a hook, or both, in that
 * order), or null when it configures none: then nothing is rotated automatically, because a
 * token nobody receives only ends in an outage when the old one's grace period is over.
 */
export function configuredDelivery (config: ServiceTokensConfig['auto_rotate'], baseDir: string): Delivery | null {
  const dir = config.output_dir === undefined ? null : resolve(baseDir, config.output_dir)
  // The program is a path (relative ones from the config file's directory): the hook runs
  // with no PATH, and none of Gatehouse's environment (which holds its keys).
  const hook = config.hook === undefined ? null : [resolve(baseDir, config.hook[0] as string), ...config.hook.slice(1)]
  if (dir === null && hook === null) return null
  const parts = [dir === null ? null : `file ${dir}/NAME.token`, hook === null ? null : `hook ${hook[0] ?? ''}`].filter((p) => p !== null)
  return {
    describe: parts.join(' and '),
    deliver: async (token) => {
      if (dir !== null) writeTokenFile(dir, token.name, token.secret)
      if (hook !== null) await runHook(hook, config.hook_timeout_seconds * 1000, token)
    }
  }
}

/** Writes `dir/NAME.token` with mode 0600 through a temporary file and a rename, so a reader never sees half a token. */
export function writeTokenFile (dir: string, name: string, secret: string): void {
  const target = join(dir, `${name}.token`)
  const temporary = join(dir, `.${name}.token.${process.pid}.tmp`)
  try {
    writeFileSync(temporary, `${secret}\n`, { mode: 0o600, flag: 'w' })
    // The mode of writeFileSync is only used when it creates the file; make sure.
    chmodSync(temporary, 0o600)
    renameSync(temporary, target)
  } catch (err) {
    rmSync(temporary, { force: true })
    throw err
  }
}

/**
 * Runs the hook without a shell: the token on standard input (never in its arguments, which
 * `ps` shows), name, identifier and expiry in its environment and nothing else of Gatehouse's. Its output is read and dropped:
 * a hook that echoes what it was given must not put the token in Gatehouse's log.
 */
function runHook (command: readonly string[], timeoutMs: number, token: { name: string, id: string, expiresAt: number, secret: string }): Promise<void> {
  const [program, ...args] = command
  return new Promise((resolvePromise, reject) => {
    const child = execFile(program as string, args, {
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 1024 * 1024,
      env: { GATEHOUSE_TOKEN_NAME: token.name, GATEHOUSE_TOKEN_ID: token.id, GATEHOUSE_TOKEN_EXPIRES_AT: new Date(token.expiresAt).toISOString() }
    }, (err) => {
      if (err === null) { resolvePromise(); return }
      const e = err as NodeJS.ErrnoException & { killed?: boolean, code?: number | string, signal?: string }
      reject(new Error(e.killed === true ? `the hook ${program ?? ''} ran longer than ${timeoutMs} ms and was killed` : `the hook ${program ?? ''} failed: ${typeof e.code === 'number' ? `exit code ${e.code}` : e.signal ?? e.code ?? 'error'}`))
    })
    child.stdin?.on('error', () => {})
    child.stdin?.end(`${token.secret}\n`)
  })
}
