import type { StatusReport } from './status.ts'

const escape = (text: string | number | null): string => text === null ? '–' : String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

const MODE_COLOURS: Record<string, string> = { normal: '#1a7f37', degraded: '#9a6700', offline: '#cf222e' }
const STATE_COLOURS: Record<string, string> = { closed: '#1a7f37', half_open: '#9a6700', open: '#cf222e' }

/**
 * `/status.html`: the status report for a person at 3 a.m. — the mode first, then every
 * Keycloak server's circuit, then the keys. Refreshes itself every 10 seconds; no script.
 */
export function statusPage (r: StatusReport): string {
  const kc = r.keycloak
  const rows = kc.servers.map((s) => `<tr><td>${escape(s.server)}</td><td><span class="badge" style="background:${STATE_COLOURS[s.state] ?? '#57606a'}">${escape(s.state)}</span></td>` +
    `<td>${escape(s.consecutive_failures)}</td><td>${escape(s.last_success_at)}</td><td>${escape(s.last_failure_at)}</td><td>${escape(s.last_error_kind)}</td><td>${escape(s.probe_after)}</td></tr>`).join('')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>Gatehouse: ${escape(r.mode)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#1f2328}
h1{font-size:1.4rem}.mode{font-size:2rem;font-weight:700;color:#fff;padding:.2rem .8rem;border-radius:.4rem}
table{border-collapse:collapse;margin:1rem 0}th,td{text-align:left;padding:.35rem .8rem;border-bottom:1px solid #d0d7de}
.badge{color:#fff;padding:.1rem .5rem;border-radius:.3rem;font-size:.9rem}dl{display:grid;grid-template-columns:max-content auto;gap:.3rem 1rem}dt{font-weight:600}
</style></head><body>
<h1>Gatehouse ${escape(r.version)}${r.environment !== null ? ` · ${escape(r.environment)}` : ''}</h1>
<p><span class="mode" style="background:${MODE_COLOURS[r.mode] ?? '#57606a'}">${escape(r.mode)}</span></p>
<dl>
<dt>Keycloak</dt><dd>${kc.enabled ? (kc.reachable ? 'reachable' : 'unreachable') : 'disabled by feature flag'} · strategy ${escape(kc.strategy)}</dd>
${kc.client_auth.state === 'failed' ? `<dt>Single sign-on</dt><dd><strong>misconfigured</strong>: Keycloak refuses the client credentials (${escape(kc.client_auth.error)}) since ${escape(kc.client_auth.since)}</dd>\n` : ''}<dt>Issuer</dt><dd>${escape(kc.issuer)}${kc.discovery.issuer_matches === false ? ` — <strong>Keycloak names ${escape(kc.discovery.issuer)}</strong>` : ''}</dd>
<dt>Signing keys</dt><dd>${escape(r.jwks.keys)} (${escape(r.jwks.key_ids.join(', '))}), fetched ${escape(r.jwks.fetched_at)}, usable until ${escape(r.jwks.usable_until)}</dd>
<dt>Sync queue</dt><dd>${escape(r.sync.pending)} pending, ${escape(r.sync.failed)} failed, ${escape(r.sync.dead)} dead; oldest ${escape(r.sync.oldest_pending_seconds ?? '-')} s${r.sync.last_error === null ? '' : `; last error: ${escape(r.sync.last_error.error)}`}</dd>
<dt>Sessions</dt><dd>${escape(Object.entries(r.sessions.active).map(([mode, n]) => `${n} ${mode}`).join(', '))}; ${escape(r.sessions.cached_tokens)} cached token sets usable</dd>
<dt>Session store</dt><dd>${escape(r.store.sessions)} · ${r.store.mode === 'normal' ? 'normal' : `<strong>degraded</strong>: ${escape(r.store.reason)}; ${escape(r.store.pending_replay)} writes wait to be replayed`}</dd>
<dt>Up since</dt><dd>${escape(r.started_at)}</dd>
</dl>
<table><thead><tr><th>Server</th><th>Circuit</th><th>Failures</th><th>Last success</th><th>Last failure</th><th>Error</th><th>Next probe</th></tr></thead><tbody>${rows}</tbody></table>
<p><a href="/status">JSON</a> · <a href="/metrics">metrics</a></p>
</body></html>`
}
