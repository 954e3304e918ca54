import { existsSync } from 'node:fs'
import { statusReport, type StatusReport } from '../admin/status.ts'
import { cachedMaterialUsable, ModeTracker } from '../breaker/mode.ts'
import { KeyRing } from '../store/crypto.ts'
import { SyncQueueRepository } from '../store/sync-queue.ts'
import { TokenCacheRepository } from '../store/token-cache.ts'
import { systemClock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { createKeycloakClient } from '../keycloak/client.ts'
import { AccessTokenVerifier } from '../keycloak/verify-token.ts'
import { createLogger } from '../log.ts'
import { createMetrics } from '../metrics/registry.ts'
import { databaseFile, openDatabase, schemaVersion } from '../store/db.ts'
import { emit, formatTable, type Output } from './output.ts'
import { withSessionService } from './session-access.ts'
import { STATUS_EXIT_CODES } from './usage.ts'
import { ServiceTokenService } from '../service-token/service.ts'
import { AuditLogRepository } from '../store/audit-log.ts'

/** Where a status report came from. */
export type StatusSource = { kind: 'running', url: string } | { kind: 'offline', database: string | null }

/** The admin URL of the instance this configuration describes (a wildcard bind is asked on loopback). */
export function adminUrlOf (config: Config): string {
  const host = config.admin.host === '0.0.0.0' ? '127.0.0.1' : config.admin.host === '::' ? '[::1]' : config.admin.host.includes(':') ? `[${config.admin.host}]` : config.admin.host
  return `http://${host}:${config.admin.port}`
}

/**
 * The status of the Gatehouse a configuration describes: from its admin listener when it is
 * running, otherwise from its database plus a live health check of every Keycloak server,
 * built by the same code the running instance uses.
 */
export async function collectStatus (config: Config): Promise<{ report: StatusReport, source: StatusSource }> {
  const url = `${adminUrlOf(config)}/status`
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) })
    if (response.ok) return { report: await response.json() as StatusReport, source: { kind: 'running', url } }
  } catch {
    // Nothing listening there: read what the database knows and ask Keycloak ourselves.
  }
  return await offlineStatus(config)
}

async function offlineStatus (config: Config): Promise<{ report: StatusReport, source: StatusSource }> {
  const file = config.database.path === ':memory:' ? null : databaseFile(config)
  const found = file !== null && existsSync(file)
  const { db } = openDatabase({ path: found ? file : ':memory:', busyTimeoutMs: config.database.busy_timeout_ms, migrate: !found })
  try {
    const clock = systemClock
    const log = createLogger({ level: 'silent' })
    const metrics = createMetrics()
    const keycloak = createKeycloakClient(config, { db, clock, log, metrics })
    keycloak.jwks.load()
    await keycloak.health.round()
    const ring = new KeyRing(config.secrets.encryption_keys)
    const tokenCache = new TokenCacheRepository(db, ring)
    const usableTokens = (): number => tokenCache.countUsable(clock.now(), keycloak.gracePeriodMs)
    const mode = new ModeTracker({
      keycloakReachable: () => keycloak.pool.reachable(),
      cachedCredentialsUsable: () => cachedMaterialUsable(keycloak.jwks.ageSeconds(), keycloak.gracePeriodMs, usableTokens)
    }, log)
    const verifier = new AccessTokenVerifier({ jwks: keycloak.jwks, issuer: config.keycloak.issuer, clientIds: [config.keycloak.client_id], algorithms: config.tokens.algorithms, clockSkewSeconds: 0, cacheMaxEntries: 0, clock, metrics })
    // Through the configured session store: with Redis, the counts are every replica's.
    const report = await withSessionService(config, db, clock, async (sessions) => await statusReport({
      config, clock, startedAt: clock.now(), keycloak, mode: mode.mode, verifier, databasePath: found ? file : '(no database yet)', schemaVersion: () => schemaVersion(db),
      sessions: async () => ({ active: await sessions.countByMode(), cachedTokens: await sessions.countUsableTokens() }),
      store: () => sessions.store.health(),
      sync: () => new SyncQueueRepository(db, ring).stats(clock.now()),
      // The tokens near expiry, from this file (issue 16), as a running serve reports them.
      ...(config.service_tokens.enabled ? { serviceTokens: () => new ServiceTokenService({ db, clock, log, audit: new AuditLogRepository(db), config: config.service_tokens }).status() } : {})
    }))
    return { report, source: { kind: 'offline', database: found ? file : null } }
  } finally {
    db.close()
  }
}

/**
 * `gatehouse status`: the picture an SRE wants during an incident, as a table or JSON. Exits
 * with the mode's code ({@link STATUS_EXIT_CODES}: 0 normal, 3 degraded, 4 offline), so a
 * script or a probe can act on it without parsing the report; a degraded session store (Redis
 * unreachable, SQLite carrying sessions) is degraded too, though Keycloak is fine.
 */
export async function runStatusCommand (config: Config, json: boolean, output: Output): Promise<number> {
  const { report, source } = await collectStatus(config)
  emit(output, json, { ...report, source }, () => formatStatus(report, source))
  return STATUS_EXIT_CODES[statusMode(report)]
}

/** The mode `gatehouse status` exits with: Keycloak's, made at least degraded by a degraded session store. */
export function statusMode (report: StatusReport): StatusReport['mode'] {
  return report.mode === 'normal' && report.store.mode === 'degraded' ? 'degraded' : report.mode
}

const ago = (iso: string | null): string => {
  if (iso === null) return '-'
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return seconds < 120 ? `${seconds}s ago` : seconds < 7200 ? `${Math.round(seconds / 60)}m ago` : `${Math.round(seconds / 3600)}h ago`
}

/** The status report as text. */
export function formatStatus (report: StatusReport, source: StatusSource): string {
  const from = source.kind === 'running'
    ? `running instance (${source.url})`
    : `no running instance; ${source.database === null ? 'no database' : `database ${source.database}`} and live health checks`
  const kc = report.keycloak
  const servers = formatTable(kc.servers, [
    { header: 'server', value: (s) => s.server },
    { header: 'state', value: (s) => s.state },
    { header: 'failures', value: (s) => s.consecutive_failures },
    { header: 'last success', value: (s) => ago(s.last_success_at) },
    { header: 'last failure', value: (s) => ago(s.last_failure_at) },
    { header: 'error', value: (s) => s.last_error_kind },
    { header: 'probe', value: (s) => (s.probe_after === null ? null : s.probe_after) }
  ])
  const j = report.jwks
  return [
    `Gatehouse ${report.version}: ${from}`,
    `mode:      ${report.mode}${report.environment !== null ? `   environment: ${report.environment}` : ''}`,
    `keycloak:  ${kc.enabled ? (kc.reachable ? 'reachable' : 'unreachable') : 'disabled by feature flag'}; issuer ${kc.issuer}; strategy ${kc.strategy}`,
    `discovery: ${kc.discovery.issuer === null ? 'never fetched' : `issuer ${kc.discovery.issuer_matches === true ? 'matches' : `DIFFERS (${kc.discovery.issuer})`}, ${ago(kc.discovery.fetched_at)}`}`,
    '',
    servers,
    '',
    `jwks:      ${j.keys} key${j.keys === 1 ? '' : 's'}${j.keys > 0 ? ` (${j.key_ids.join(', ')})` : ''}; fetched ${ago(j.fetched_at)}${j.source !== null ? ` from ${j.source}` : ''}; usable until ${j.usable_until ?? '-'}`,
    `sync:      ${report.sync.pending} pending, ${report.sync.failed} failed, ${report.sync.dead} dead${report.sync.oldest_pending_seconds !== null ? `; oldest ${report.sync.oldest_pending_seconds}s` : ''}${report.sync.last_error !== null ? `; last error: ${report.sync.last_error.error}` : ''}`,
    `sessions:  ${Object.entries(report.sessions.active).map(([mode, n]) => `${n} ${mode}`).join(', ')}; ${report.sessions.cached_tokens} cached token set${report.sessions.cached_tokens === 1 ? '' : 's'} usable`,
    `store:     ${report.store.sessions} ${report.store.mode}${report.store.mode === 'degraded' ? ` (${report.store.reason ?? 'unreachable'}; ${report.store.pending_replay} writes to replay)` : ''}`,
    `database:  ${report.database.path} (schema ${report.database.schema_version})`,
    ...(report.service_tokens === undefined ? [] : [serviceTokenLine(report.service_tokens)])
  ].join('\n')
}

// Issue 16: the tokens near expiry by name, so `gatehouse status` says what to rotate.
function serviceTokenLine (st: NonNullable<StatusReport['service_tokens']>): string {
  const c = st.counts
  const expiring = st.expiring.length === 0 ? 'none expiring soon' : `expiring soon: ${st.expiring.map((e) => `${e.name} (${e.expires_at})`).join(', ')}`
  const grace = st.alerts.filter((a) => a.kind === 'previous_in_use').map((a) => a.name)
  return `tokens:    ${c.active + c.expiring} live, ${c.revoked} revoked, ${c.expired} expired; ${expiring}${grace.length > 0 ? `; previous token still in use near the end of its grace: ${grace.join(', ')}` : ''}`
}
