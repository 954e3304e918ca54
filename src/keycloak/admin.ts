import type KcAdminClient from '@keycloak/keycloak-admin-client'
import type { Clock } from '../clock.ts'
import { KeycloakRejected, KeycloakUnavailable } from '../errors.ts'
import type { KeycloakPool } from './failover.ts'
import { keycloakErrorOf } from './http.ts'
import type { OidcClient } from './oidc.ts'

/** What {@link AdminApi} needs. */
export interface AdminApiOptions {
  pool: KeycloakPool
  /** An OIDC client holding the service account's credentials. */
  oidc: OidcClient
  realm: string
  clock: Clock
  timeoutMs: number
}

// Loaded on first use: the client is a sizeable import that start-up (which must be quick
// while Keycloak is down) does not need.
let adminModule: Promise<typeof import('@keycloak/keycloak-admin-client')> | undefined
const loadAdminClient = async (): Promise<typeof import('@keycloak/keycloak-admin-client')> => await (adminModule ??= import('@keycloak/keycloak-admin-client'))

// A token this close to its end is replaced before use.
const TOKEN_MARGIN_MS = 10_000

/**
 * Keycloak's Admin API through the official client, every request through the server pool
 * (deadline, breakers, failover). The service-account token comes from the client-credentials
 * grant, through the pool too, and is reused until shortly before it expires; a 401 drops it
 * and the call is tried once more with a new one. Failures come out as
 * {@link KeycloakUnavailable} (network, 5xx: the breaker counts them) or
 * {@link KeycloakRejected} (Keycloak answered 4xx).
 */
export class AdminApi {
  readonly #o: AdminApiOptions
  #token: { value: string, expiresAt: number } | null = null
  #pending: Promise<string> | null = null

  constructor (options: AdminApiOptions) {
    this.#o = options
  }

  async call<T> (fn: (kc: KcAdminClient) => Promise<T>): Promise<T> {
    try {
      return await this.#once(await this.#accessToken(), fn)
    } catch (err) {
      if (!(err instanceof KeycloakRejected) || err.status !== 401) throw err
      this.#token = null
      return await this.#once(await this.#accessToken(), fn)
    }
  }

  async #once<T> (token: string, fn: (kc: KcAdminClient) => Promise<T>): Promise<T> {
    const { default: AdminClient } = await loadAdminClient()
    return await this.#o.pool.call('admin', async (target) => {
      const kc = new AdminClient({ baseUrl: target.server.replace(/\/+$/, ''), realmName: this.#o.realm, timeout: this.#o.timeoutMs })
      kc.setAccessToken(token)
      try {
        return await withDeadline(fn(kc), target.signal)
      } catch (err) {
        throw keycloakErrorOf(err, target)
      }
    })
  }

  async #accessToken (): Promise<string> {
    const now = this.#o.clock.now()
    if (this.#token !== null && this.#token.expiresAt - TOKEN_MARGIN_MS > now) return this.#token.value
    this.#pending ??= this.#o.oidc.clientCredentials().then((tokens) => {
      this.#token = { value: tokens.accessToken, expiresAt: tokens.accessExpiresAt }
      return tokens.accessToken
    }).finally(() => { this.#pending = null })
    return await this.#pending
  }
}

// The admin client's own timeout bounds the request; the pool's signal bounds the wait.
async function withDeadline<T> (work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw new KeycloakUnavailable('timeout', 'keycloak admin API did not answer before the deadline')
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(new KeycloakUnavailable('timeout', 'keycloak admin API did not answer before the deadline'))
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([work, aborted])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
