import type { StatusReport, ServerReport } from './status.ts'
import { circuitStrip, stackedBars } from './charts.ts'

/** Fields other parts of Gatehouse may add to `/status` (the shared session store): shown when present, `–` otherwise. */
interface OptionalFields {
  store?: { sessions?: string | null, mode?: string | null, reason?: string | null, pending_replay?: number | null } | null
}

/** What the page is rendered with. */
export interface StatusPageOptions {
  /** Seconds between reloads (`admin.dashboard_refresh_seconds`). */
  refreshSeconds: number
  /** When the page is rendered (ms): ages are counted from it. */
  now: number
  /** The CSP nonce of the page's one style sheet and one script. */
  nonce: string
}

const DASH = '–'
const esc = (text: string | number | null | undefined): string => text === null || text === undefined ? DASH : String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** `45 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`. */
export function duration (seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 === 0 ? '' : ` ${s % 60} s`}`
  if (s < 86400) return `${Math.floor(s / 3600)} h${Math.floor((s % 3600) / 60) === 0 ? '' : ` ${Math.floor((s % 3600) / 60)} min`}`
  return `${Math.floor(s / 86400)} d${Math.floor((s % 86400) / 3600) === 0 ? '' : ` ${Math.floor((s % 86400) / 3600)} h`}`
}

/**
 * A time for a person: UTC always (`2025-01-31 08:00:05 UTC`), how long ago, and (filled in by
 * the page's script, in the reader's own time zone) the local time beside it.
 */
function time (iso: string | null | undefined, now: number, options: { future?: boolean } = {}): string {
  if (iso === null || iso === undefined) return DASH
  const ms = Date.parse(iso)
  if (Number.isNaN(ms)) return esc(iso)
  const utc = new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
  const delta = (now - ms) / 1000
  const relative = options.future === true || delta < -1 ? `in ${duration(-delta)}` : `${duration(delta)} ago`
  return `<span class="when"><time datetime="${esc(new Date(ms).toISOString())}">${utc}</time> <span class="ago">(${relative})</span></span>`
}

type Tone = 'ok' | 'warn' | 'bad' | 'idle'

function badge (text: string, tone: Tone, id?: string): string {
  return `<span class="badge t-${tone}"${id !== undefined ? ` id="${esc(id)}"` : ''}>${esc(text)}</span>`
}

/** How a server's circuit is shown: never a green `closed` for a server that is failing. */
export function circuitBadge (s: Pick<ServerReport, 'state' | 'consecutive_failures' | 'last_success_at' | 'last_failure_at'>): { text: string, tone: Tone } {
  if (s.state === 'open') return { text: 'open', tone: 'bad' }
  if (s.state === 'half_open') return { text: 'half-open (probing)', tone: 'warn' }
  if (s.consecutive_failures > 0) return { text: `closed, failing (${s.consecutive_failures} in a row)`, tone: 'warn' }
  if (s.last_success_at === null && s.last_failure_at === null) return { text: 'not checked yet', tone: 'idle' }
  return { text: 'closed', tone: 'ok' }
}

const MODE_TONE: Record<string, Tone> = { normal: 'ok', degraded: 'warn', offline: 'bad' }
const MODE_TEXT: Record<string, string> = {
  normal: 'Keycloak answers: logins and tokens go through it.',
  degraded: 'No Keycloak server answers: sessions and bearer tokens run on cached tokens and keys until the grace period ends; local logins work.',
  offline: 'No Keycloak server answers and no cached Keycloak material is usable: local logins only.'
}

const STYLE = `*{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:1rem;color:#1f2328;background:#f6f8fa}
main{max-width:72rem;margin:0 auto}header h1{font-size:1.15rem;margin:0 0 .5rem}section{background:#fff;border:1px solid #d0d7de;border-radius:.5rem;padding:.8rem 1rem;margin:0 0 1rem}
h2{font-size:1rem;margin:0 0 .6rem}.mode{display:inline-block;font-size:1.8rem;font-weight:700;color:#fff;padding:.1rem .9rem;border-radius:.4rem;text-transform:uppercase;letter-spacing:.03em}
.badge{display:inline-block;justify-self:start;color:#fff;padding:.05rem .5rem;border-radius:.3rem;font-size:.85rem;white-space:nowrap}
.t-ok{background:#1a7f37}.t-warn{background:#9a6700}.t-bad{background:#cf222e}.t-idle{background:#6e7781}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.table{overflow-x:auto}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #d0d7de;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}.ago,.local,.note,.error{color:#57606a;font-size:.85rem}td .local,td .error,dd .local{display:block}.error{color:#a40e26}td.server{min-width:11rem}
.alerts li{margin:.2rem 0}.alerts .critical{color:#cf222e;font-weight:600}.alerts .warning{color:#9a6700;font-weight:600}
svg.strip{display:block;width:100%;height:14px;margin:.2rem 0 .1rem}svg.bars{display:block;width:100%;height:60px;margin:.3rem 0}
.h-closed{fill:#1a7f37}.h-failing{fill:#d4a72c}.h-half_open{fill:#bf8700}.h-open{fill:#cf222e}.h-unknown,.h-none{fill:#d0d7de}
.s-allow{fill:#1a7f37}.s-redirect{fill:#0969da}.s-deny{fill:#cf222e}.s-keycloak{fill:#0969da}.s-cached{fill:#bf8700}.s-local{fill:#8250df}.axis{stroke:#8c959f;stroke-width:.1}
.legend span{margin-right:.8rem;white-space:nowrap}.legend i{display:inline-block;width:.7rem;height:.7rem;border-radius:.15rem;margin-right:.25rem;vertical-align:-.05rem}
.l-allow,.l-closed{background:#1a7f37}.l-redirect,.l-keycloak{background:#0969da}.l-deny,.l-open{background:#cf222e}.l-cached,.l-half_open{background:#bf8700}.l-local{background:#8250df}.l-failing{background:#d4a72c}.l-none{background:#d0d7de}
.axislabels{display:flex;justify-content:space-between;color:#57606a;font-size:.75rem}.server{overflow-wrap:anywhere;font-size:.9rem}
@media (max-width:40rem){body{padding:.5rem;font-size:14px}.mode{font-size:1.4rem}dl{grid-template-columns:1fr}dt{margin-top:.3rem}th,td{padding:.25rem .35rem}
table.servers thead{display:none}table.servers tr{display:block;border-bottom:2px solid #d0d7de;padding:.3rem 0}table.servers td{display:grid;grid-template-columns:7.5rem 1fr;border:0;text-align:left;min-width:0}
table.servers td::before{content:attr(data-label);font-weight:600}td.server{overflow-wrap:anywhere}}`

// Fills in the reader's local time beside every UTC time; the page works without it.
const SCRIPT = `(function(){var z='';try{z=Intl.DateTimeFormat().resolvedOptions().timeZone||''}catch(e){}
var p=function(n){return (n<10?'0':'')+n};
document.querySelectorAll('time[datetime]').forEach(function(t){var d=new Date(t.getAttribute('datetime'));if(isNaN(d.getTime()))return;
var s=document.createElement('span');s.className='local';
s.textContent=' · '+d.getFullYear()+'-'+p(d.getMonth()+1)+'-'+p(d.getDate())+' '+p(d.getHours())+':'+p(d.getMinutes())+':'+p(d.getSeconds())+' local'+(z?' ('+z+')':'');
t.parentNode.appendChild(s)})})()`

function legend (names: readonly string[], prefix = 'l-'): string {
  return `<p class="legend">${names.map((n) => `<span><i class="${prefix}${n}"></i>${esc(n.replace('_', '-'))}</span>`).join('')}</p>`
}

const axis = '<div class="axislabels"><span>60 min ago</span><span>30 min</span><span>now</span></div>'

/**
 * `/status.html`: the page for a person paged at 3 a.m. The mode first, with since when and
 * what it means; then what is firing; each Keycloak server's circuit now and over the last
 * hour; traffic (decisions, logins) over the hour; the sync queue; sessions; keys and
 * discovery; policy and store. Plain HTML and inline SVG, one stylesheet and one tiny script
 * (local times) under a nonce; reloads itself every `refreshSeconds`; readable on a phone.
 */
export function statusPage (report: StatusReport, options: StatusPageOptions): string {
  const r = report as StatusReport & OptionalFields
  const { now } = options
  const kc = r.keycloak
  const last = r.last_hour
  const generated = new Date(now).toISOString()

  const alerts = r.alerts === undefined
    ? ''
    : `<section id="alerts"><h2>Alerts</h2>${!r.alerts.enabled
      ? '<p class="note">Gatehouse\'s own alerts are off (alerts.enabled); the Prometheus rules in deploy/prometheus/alerts.yaml cover the same conditions.</p>'
      : `${r.alerts.firing.length === 0
        ? '<p id="alerts-none">No alert is firing.</p>'
        : `<ul class="alerts" id="alerts-firing">${r.alerts.firing.map((a) => `<li><span class="${esc(a.severity)}">${esc(a.severity.toUpperCase())}</span> ${esc(a.summary)} <span class="note">since ${time(a.since, now)}</span></li>`).join('')}</ul>`}` +
        `<p class="note">${r.alerts.channels.length === 0 ? 'No channel is enabled: alerts are only shown here.' : `Sent to ${esc(r.alerts.channels.join(' and '))}.`}</p>`}</section>`

  const servers = kc.servers.map((s, i) => {
    const b = circuitBadge(s)
    return `<tr><td class="server" data-label="Server">${esc(s.server)}</td><td data-label="Circuit">${badge(b.text, b.tone, `circuit-${i}`)}</td><td class="num" data-label="Failures">${esc(s.consecutive_failures)}</td>` +
      `<td data-label="Last success">${time(s.last_success_at, now)}</td><td data-label="Last failure">${time(s.last_failure_at, now)}${s.last_error_kind !== null ? `<span class="error">${esc(s.last_error_kind)}${s.last_error !== null ? `: ${esc(s.last_error)}` : ''}</span>` : ''}</td>` +
      `<td data-label="Next probe">${s.state === 'open' ? time(s.probe_after, now, { future: true }) : DASH}</td></tr>`
  }).join('')

  const history = last === undefined
    ? ''
    : `<h2>Circuits, last hour</h2>${last.circuits.map((c) => `<div class="server">${esc(c.server)}</div>${circuitStrip(c.minutes, Date.parse(last.from), `circuit of ${c.server}`)}`).join('')}${axis}${legend(['closed', 'failing', 'half_open', 'open', 'none'])}`

  const traffic = last === undefined
    ? ''
    : `<section id="traffic"><h2>Decisions, last hour</h2>
<p id="decisions">${(['allow', 'deny', 'redirect'] as const).map((d) => `<span id="decisions-${d}">${esc(last.decisions[d] ?? 0)}</span> ${d}`).join(' · ')}</p>
${stackedBars({ allow: last.decisions_per_minute.allow ?? [], redirect: last.decisions_per_minute.redirect ?? [], deny: last.decisions_per_minute.deny ?? [] }, Date.parse(last.from), 'decisions per minute')}${axis}${legend(['allow', 'redirect', 'deny'])}
<h2>Logins, last hour</h2>
<p id="logins">${Object.entries(last.logins).map(([m, n]) => `<span id="logins-${esc(m)}">${esc(n)}</span> ${esc(m)}`).join(' · ')} · <span id="logins-failed">${esc(last.login_failures)}</span> failed</p>
${stackedBars(last.logins_per_minute, Date.parse(last.from), 'successful logins per minute')}${axis}${legend(Object.keys(last.logins_per_minute))}</section>`

  const sync = r.sync
  const oldest = sync.oldest_pending_seconds === null ? 'none waiting' : duration(sync.oldest_pending_seconds)
  const syncRows = (['pending', 'processing', 'failed', 'dead', 'done'] as const).map((k) => `<tr><th>${k}</th><td class="num" id="sync-${k}">${esc(sync[k])}</td></tr>`).join('')

  // Issue 16: tokens near expiry, soonest first, so the person on call sees what to rotate.
  const st = r.service_tokens
  const tokens = st === undefined
    ? ''
    : `<section id="service-tokens"><h2>Service tokens</h2><p id="service-token-counts">${(['active', 'expiring', 'expired', 'revoked', 'in_grace'] as const).map((k) => `${esc(st.counts[k])} ${k.replace('_', ' ')}`).join(' · ')}</p>${st.expiring.length === 0
      ? '<p class="note" id="service-tokens-expiring-none">None expires soon.</p>'
      : `<div class="table"><table><thead><tr><th>Expiring soon</th><th>Expires</th><th>Automatic rotation</th></tr></thead><tbody id="service-tokens-expiring">${st.expiring.map((e) => `<tr><td data-label="Token">${esc(e.name)}</td><td data-label="Expires">${time(e.expires_at, now, { future: true })}</td><td data-label="Automatic rotation">${e.auto_rotate_days === null ? 'off' : `${esc(e.auto_rotate_days)} days before`}</td></tr>`).join('')}</tbody></table></div>`}${st.alerts.filter((a) => a.kind === 'previous_in_use').map((a) => `<p class="note">${badge('previous in use', 'warn')} ${esc(a.name)}: the token before its rotation is still used; its grace period ends ${time(a.previous_valid_until, now, { future: true })}</p>`).join('')}</section>`

  const store = r.store
  const policy = r.policy
  const modeSince = r.mode_since ?? null

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="${options.refreshSeconds}">
<title>Gatehouse: ${esc(r.mode)}</title>
<style nonce="${esc(options.nonce)}">${STYLE}</style></head><body><main>
<header><h1>Gatehouse ${esc(r.version)}${r.environment !== null ? ` · ${esc(r.environment)}` : ''}</h1>
<p><span class="mode t-${MODE_TONE[r.mode] ?? 'idle'}" id="mode">${esc(r.mode)}</span>${modeSince !== null ? ` <span id="mode-since">since ${time(modeSince, now)}</span>` : ''}</p>
<p>${esc(MODE_TEXT[r.mode] ?? '')}</p>
<p class="note" id="generated">Rendered ${time(generated, now)}; reloads every ${esc(options.refreshSeconds)} s. Up since ${time(r.started_at, now)}.</p></header>
${alerts}
<section id="keycloak"><h2>Keycloak</h2><dl>
<dt>Servers</dt><dd id="keycloak-reachable">${kc.enabled ? (kc.reachable ? badge('reachable', 'ok') : badge('unreachable', 'bad')) : badge('disabled by feature flag', 'idle')} · strategy ${esc(kc.strategy)}</dd>
<dt>Client credentials</dt><dd id="client-auth">${kc.client_auth.state === 'failed' ? `${badge('refused', 'bad')} Keycloak refuses Gatehouse's client credentials (${esc(kc.client_auth.error)}) since ${time(kc.client_auth.since, now)}: single sign-on is misconfigured (keycloak.client_id, keycloak.client_secret)` : kc.client_auth.state === 'ok' ? badge('accepted', 'ok') : badge('not used yet', 'idle')}</dd>
<dt>Issuer</dt><dd id="issuer">${esc(kc.issuer)}${kc.discovery.issuer_matches === false ? ` ${badge('mismatch', 'bad')} Keycloak names <strong>${esc(kc.discovery.issuer)}</strong>: set keycloak.issuer to it, or fix Keycloak's hostname` : ''}</dd>
<dt>Discovery</dt><dd id="discovery">${kc.discovery.fetched_at === null ? 'never fetched' : `fetched ${time(kc.discovery.fetched_at, now)} from ${esc(kc.discovery.server)}`} · endpoints from ${esc(kc.discovery.endpoints_from)}</dd>
<dt>Signing keys</dt><dd id="jwks">${esc(r.jwks.keys)} key${r.jwks.keys === 1 ? '' : 's'}${r.jwks.keys > 0 ? ` (${esc(r.jwks.key_ids.join(', '))})` : ''}; ${r.jwks.fetched_at === null ? 'never fetched' : `fetched ${time(r.jwks.fetched_at, now)}; usable until ${time(r.jwks.usable_until, now, { future: true })}`}</dd>
</dl>
<div class="table"><table class="servers"><thead><tr><th>Server</th><th>Circuit</th><th class="num">Failures</th><th>Last success</th><th>Last failure</th><th>Next probe</th></tr></thead><tbody id="servers">${servers}</tbody></table></div>
${history}</section>
${traffic}
<section id="sync"><h2>Sync queue</h2>
<p>Oldest unfinished item: <strong id="sync-oldest">${esc(oldest)}</strong>${sync.last_error === null ? '' : `<br>Last error: <span id="sync-last-error">${esc(sync.last_error.operation)} for ${esc(sync.last_error.username)} (${esc(sync.last_error.status)}): ${esc(sync.last_error.error)}</span>`}</p>
<div class="table"><table><tbody>${syncRows}</tbody></table></div></section>
<section id="sessions"><h2>Sessions</h2><dl>
<dt>Active</dt><dd id="sessions-active">${Object.entries(r.sessions.active).map(([mode, n]) => `${esc(n)} ${esc(mode)}`).join(' · ') || '0'}</dd>
<dt>Cached token sets</dt><dd id="cached-tokens">${esc(r.sessions.cached_tokens)} usable</dd>
<dt>Session store</dt><dd id="store">${store?.sessions == null ? DASH : `${esc(store.sessions)} · ${store.mode === 'normal' || store.mode == null ? esc(store.mode) : `${badge(store.mode, 'warn')} ${esc(store.reason)}${store.pending_replay != null && store.pending_replay > 0 ? `; ${esc(store.pending_replay)} writes wait to be replayed` : ''}`}`}</dd>
</dl></section>
${tokens}
<section id="runtime"><h2>This instance</h2><dl>
<dt>Policy version</dt><dd id="policy-version">${policy === undefined ? DASH : `${esc(policy.version)} · ${esc(policy.rules)} rule${policy.rules === 1 ? '' : 's'}, ${esc(policy.roles)} role${policy.roles === 1 ? '' : 's'} from ${esc(policy.files.join(', ') || 'no files')} · loaded ${time(policy.loaded_at, now)}${policy.last_reload?.result === 'failure' ? ` · <strong>last reload rejected</strong> ${time(policy.last_reload.at, now)}: ${esc(policy.last_reload.problems[0] ?? '')}` : ''}`}</dd>
<dt>Database</dt><dd id="database">${esc(r.database.path)} (schema ${esc(r.database.schema_version)})</dd>
<dt>Verified token cache</dt><dd>${esc(r.tokens.verified_cache_entries)} entries</dd>
</dl></section>
<p class="note"><a href="/status">JSON</a> · <a href="/metrics">metrics</a></p>
</main><script nonce="${esc(options.nonce)}">${SCRIPT}</script></body></html>`
}
