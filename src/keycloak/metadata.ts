import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { KeycloakUnavailable } from '../errors.ts'
import type { MetaRepository } from '../store/meta.ts'
import type { CallTarget, KeycloakPool } from './failover.ts'
import { keycloakFetch, readJson } from './http.ts'
import { endpointsOfDiscovery, NO_ENDPOINTS, type ProviderEndpoints, type ProviderLayout } from './provider.ts'

const META_KEY = 'keycloak_discovery'

/** The last discovery document the provider served, as stored. */
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
  /** Where the endpoints in use come from: discovery, config (keycloak.endpoints), keycloak_layout, or none yet. */
  endpoints_from: 'discovery' | 'config' | 'keycloak_layout' | 'none'
}

/** Endpoints configured by hand (`keycloak.endpoints`), as the config spells them. */
export interface EndpointOverrides {
  authorization?: string
  token?: string
  jwks?: string
  userinfo?: string
  end_session?: string
  revocation?: string
}

/** Options of {@link ProviderMetadata}. */
export interface MetadataOptions {
  layout: ProviderLayout
  overrides: EndpointOverrides
  repository: MetaRepository
  clock: Clock
  log: Logger
}

/** Called when the endpoints in use change (a discovery document was accepted). */
export type EndpointsListener = (endpoints: ProviderEndpoints) => void

/**
 * The provider's endpoints (OIDC Discovery 1.0): from `{issuer}/.well-known/openid-configuration`,
 * read by the health checks on every server and kept in SQLite as the last good copy, so a
 * restart while the provider is unreachable still knows them. Each endpoint set in
 * `keycloak.endpoints` overrides discovery (a first start while the provider is away). A
 * Keycloak realm falls back to Keycloak's URL layout until discovery was first read.
 *
 * A document whose `issuer` is not `keycloak.issuer` is refused (Discovery §4.3): it is the
 * classic hostname misconfiguration, and every token would be refused anyway.
 */
export class ProviderMetadata {
  readonly #options: MetadataOptions
  readonly #listeners: EndpointsListener[] = []
  #last: DiscoveryRecord | null = null
  #endpoints: ProviderEndpoints
  #from: DiscoveryStatus['endpoints_from'] = 'none'
  #warnedIssuer: unknown = undefined
  // The latest document refused for its issuer, for /status: the misconfiguration to show.
  #refused: DiscoveryRecord | null = null
  #resolving: Promise<ProviderEndpoints> | null = null

  constructor (options: MetadataOptions) {
    this.#options = options
    this.#endpoints = this.#merge(null)
  }

  /** Where the provider's URLs are on each server. */
  get layout (): ProviderLayout {
    return this.#options.layout
  }

  /** Loads the last good discovery document from the store (no network). */
  load (): void {
    const stored = this.#options.repository.get<DiscoveryRecord>(META_KEY)
    if (stored !== null && this.#issuerMatches(stored.value.document)) {
      this.#last = stored.value
      this.#endpoints = this.#merge(stored.value.document)
    }
  }

  /** Records a discovery document a server just served; returns whether it was accepted. */
  accept (document: Record<string, unknown>, server: string): boolean {
    const issuer = document.issuer
    if (!this.#issuerMatches(document)) {
      this.#refused = { document, server, fetchedAt: this.#options.clock.now() }
      if (issuer !== this.#warnedIssuer) {
        this.#warnedIssuer = issuer
        this.#options.log.warn({ server, discovered_issuer: issuer, configured_issuer: this.#options.layout.issuer },
          'the provider names another issuer than keycloak.issuer: its endpoints are not used and its tokens will be refused; set keycloak.issuer to the public issuer (Keycloak\'s hostname)')
      }
      return false
    }
    const record = { document, server, fetchedAt: this.#options.clock.now() }
    this.#last = record
    this.#refused = null
    this.#options.repository.put(META_KEY, record, record.fetchedAt)
    const next = this.#merge(document)
    const changed = JSON.stringify(next) !== JSON.stringify(this.#endpoints)
    this.#endpoints = next
    if (changed) for (const listener of this.#listeners) listener(next)
    return true
  }

  /** The endpoints in use now (nulls for what is not known). */
  get endpoints (): ProviderEndpoints {
    return this.#endpoints
  }

  /** Calls `listener` whenever the endpoints in use change. */
  onChange (listener: EndpointsListener): void {
    this.#listeners.push(listener)
  }

  /**
   * The endpoints, reading discovery through the pool first when `needed` is not known yet
   * (a first start with nothing stored). Throws {@link KeycloakUnavailable} when it cannot.
   */
  async require (pool: KeycloakPool, needed: keyof Omit<ProviderEndpoints, 'authMethods'>): Promise<ProviderEndpoints> {
    if (this.#endpoints[needed] !== null) return this.#endpoints
    this.#resolving ??= pool.call('discovery', async (target) => {
      this.accept(await fetchDiscovery(target), target.server)
      return this.#endpoints
    }).finally(() => { this.#resolving = null })
    const endpoints = await this.#resolving
    if (endpoints[needed] === null) throw new KeycloakUnavailable('bad_response', `the provider publishes no ${needed} endpoint`)
    return endpoints
  }

  /** The discovery document last accepted, or null. */
  get last (): DiscoveryRecord | null {
    return this.#last
  }

  /** What `/status` shows. */
  status (): DiscoveryStatus {
    const last = this.#refused ?? this.#last
    const issuer = last !== null && typeof last.document.issuer === 'string' ? last.document.issuer : null
    return {
      issuer,
      issuer_matches: last === null ? null : issuer === this.#options.layout.issuer,
      server: last?.server ?? null,
      fetched_at: last === null ? null : new Date(last.fetchedAt).toISOString(),
      endpoints_from: this.#from
    }
  }

  #issuerMatches (document: Record<string, unknown>): boolean {
    return typeof document.issuer === 'string' && document.issuer.replace(/\/+$/, '') === this.#options.layout.issuer
  }

  // Overrides, then discovery, then (a Keycloak realm only, with no discovery yet) its layout.
  #merge (document: Record<string, unknown> | null): ProviderEndpoints {
    const o = this.#options.overrides
    const base = document !== null ? endpointsOfDiscovery(document) : this.#options.layout.keycloakLayout() ?? NO_ENDPOINTS
    const configured = Object.values(o).some((v) => v !== undefined)
    this.#from = document !== null ? 'discovery' : configured ? 'config' : base === NO_ENDPOINTS ? 'none' : 'keycloak_layout'
    return Object.freeze({
      authorization: o.authorization ?? base.authorization,
      token: o.token ?? base.token,
      jwks: o.jwks ?? base.jwks,
      userinfo: o.userinfo ?? base.userinfo,
      endSession: o.end_session ?? base.endSession,
      revocation: o.revocation ?? base.revocation,
      authMethods: base.authMethods
    })
  }
}

/** GETs a server's discovery document: the health check, and where the endpoints come from. */
export async function fetchDiscovery (target: CallTarget): Promise<Record<string, unknown>> {
  return (await fetchDiscoveryAnswer(target)).document
}

/**
 * {@link fetchDiscovery}, with the answer's `Date` header (RFC 9110 §6.6.1: the server's clock
 * when it answered, to the second), which `doctor diagnose` reads the clock skew from.
 */
export async function fetchDiscoveryAnswer (target: CallTarget): Promise<{ document: Record<string, unknown>, date: string | null }> {
  const response = await keycloakFetch(target.discovery, { headers: { accept: 'application/json' } }, target)
  const body = await readJson(response, target)
  if (body === null || typeof body !== 'object' || typeof (body as { issuer?: unknown }).issuer !== 'string') {
    throw new KeycloakUnavailable('bad_response', 'the provider\'s discovery document has no issuer', { server: target.server })
  }
  return { document: body as Record<string, unknown>, date: response.headers.get('date') }
}
