import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { KeycloakUnavailable } from '../errors.ts'
import type { MetaRepository } from '../store/meta.ts'
import { issuerBase, realmEndpoints, type RealmEndpoints } from './endpoints.ts'
import type { CallTarget } from './failover.ts'
import { keycloakFetch, readJson } from './http.ts'

const META_KEY = 'keycloak_discovery'

/** The last discovery document Keycloak served, as stored. */
export interface DiscoveryRecord {
  document: Record<string, unknown>
  server: string
  fetchedAt: number
}

/** What `/status` shows of discovery. */
export interface DiscoveryStatus {
  issuer: string | null
  issuer_matches: boolean | null
  server: string | null
  fetched_at: string | null
}

/** Options of {@link KeycloakMetadata}. */
export interface MetadataOptions {
  /** `keycloak.issuer`: the public issuer. */
  issuer: string
  realm: string
  repository: MetaRepository
  clock: Clock
  log: Logger
}

/**
 * The realm's metadata. Gatehouse never depends on discovery: every endpoint is derived from
 * Keycloak's URL layout, browser-facing ones from the public issuer and back-channel ones
 * from each server (protocol-facts §C.1-2). Discovery is still read (by the health checks),
 * kept in SQLite as the last good copy, and checked: an issuer that differs from
 * `keycloak.issuer` is the classic hostname misconfiguration, and every token would be refused.
 */
export class KeycloakMetadata {
  readonly #options: MetadataOptions
  readonly publicEndpoints: RealmEndpoints
  #last: DiscoveryRecord | null = null
  #warnedIssuer: string | null = null

  constructor (options: MetadataOptions) {
    this.#options = options
    this.publicEndpoints = realmEndpoints(issuerBase(options.issuer), options.realm)
  }

  /** Loads the last good discovery document from the store (no network). */
  load (): void {
    const stored = this.#options.repository.get<DiscoveryRecord>(META_KEY)
    if (stored !== null) this.#last = stored.value
  }

  /** Records a discovery document a server just served, and checks its issuer. */
  accept (document: Record<string, unknown>, server: string): void {
    const record = { document, server, fetchedAt: this.#options.clock.now() }
    this.#last = record
    this.#options.repository.put(META_KEY, record, record.fetchedAt)
    const issuer = document.issuer
    if (issuer !== this.#options.issuer && issuer !== this.#warnedIssuer) {
      this.#warnedIssuer = typeof issuer === 'string' ? issuer : null
      this.#options.log.warn({ server, discovered_issuer: issuer, configured_issuer: this.#options.issuer },
        'keycloak names another issuer than keycloak.issuer: tokens it issues will be refused; set keycloak.issuer to the public issuer (Keycloak\'s hostname)')
    }
  }

  /** The discovery document last seen, or null. */
  get last (): DiscoveryRecord | null {
    return this.#last
  }

  /** What `/status` shows. */
  status (): DiscoveryStatus {
    const last = this.#last
    if (last === null) return { issuer: null, issuer_matches: null, server: null, fetched_at: null }
    const issuer = typeof last.document.issuer === 'string' ? last.document.issuer : null
    return { issuer, issuer_matches: issuer === this.#options.issuer, server: last.server, fetched_at: new Date(last.fetchedAt).toISOString() }
  }
}

/** GETs a server's discovery document: the health check, and proof the realm exists there. */
export async function fetchDiscovery (target: CallTarget): Promise<Record<string, unknown>> {
  const response = await keycloakFetch(target.endpoints.discovery, { headers: { accept: 'application/json' } }, target)
  const body = await readJson(response, target)
  if (body === null || typeof body !== 'object' || typeof (body as { issuer?: unknown }).issuer !== 'string') {
    throw new KeycloakUnavailable('bad_response', 'keycloak discovery document has no issuer', { server: target.server })
  }
  return body as Record<string, unknown>
}
