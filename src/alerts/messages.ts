import type { AlertSeverity } from '../store/alert-state.ts'
import type { AlertName } from './conditions.ts'

/** One notification about one alert instance. */
export interface AlertNotification {
  kind: 'firing' | 'repeat' | 'resolved'
  key: string
  alert: AlertName | string
  severity: AlertSeverity
  summary: string
  facts: Array<[string, string]>
  hint: string
  /** When it started firing (ms). */
  since: number
  /** When this was sent (ms). */
  at: number
}

/** The daily digest. */
export interface DigestMessage {
  /** The scheduled time it is for (ms). */
  for: number
  /** One line. */
  summary: string
  /** Sections, each a title and its lines. */
  sections: Array<{ title: string, lines: string[] }>
}

/** Who sends: shown in every message, so a person with several sidecars knows which one. */
export interface Sender {
  instance: string
  environment: string | null
  version: string
  /** Where the dashboard is, when it can be named. */
  dashboard: string | null
  /** IANA zone for the local times shown beside UTC. */
  timezone: string
}

const COLOURS = { firing: { critical: '#cf222e', warning: '#bf8700' }, resolved: '#1a7f37', digest: '#0969da' }

/** `2025-01-31 08:00:00 UTC (09:00 Europe/Berlin)`: UTC always, the zone's local time beside it. */
export function formatTime (ms: number, zone: string): string {
  const utc = new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
  if (zone === 'UTC') return utc
  const local = new Intl.DateTimeFormat('en-GB', { timeZone: zone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms)
  return `${utc} (${local} ${zone})`
}

function heading (n: AlertNotification): string {
  if (n.kind === 'resolved') return 'RESOLVED'
  return `${n.kind === 'repeat' ? 'STILL FIRING' : 'FIRING'} ${n.severity}`
}

/** The e-mail subject of a notification. */
export function alertSubject (prefix: string, n: AlertNotification, sender: Sender): string {
  return `${prefix} ${heading(n)}: ${n.summary}${sender.environment !== null ? ` [${sender.environment}]` : ''}`.trim()
}

/** The plain-text body of a notification. */
export function alertText (n: AlertNotification, sender: Sender): string {
  const lines = [
    `${heading(n)}: ${n.summary}`,
    '',
    ...n.facts.map(([k, v]) => `${k}: ${v}`),
    `alert: ${n.alert} (${n.key})`,
    n.kind === 'resolved' ? `resolved at: ${formatTime(n.at, sender.timezone)}` : `firing since: ${formatTime(n.since, sender.timezone)}`,
    '',
    ...(n.kind === 'resolved' ? [] : [`What to do: ${n.hint}`, '']),
    `Sent by Gatehouse ${sender.version} on ${sender.instance}${sender.environment !== null ? ` (${sender.environment})` : ''} at ${formatTime(n.at, sender.timezone)}.`,
    ...(sender.dashboard !== null ? [`Dashboard: ${sender.dashboard}`] : [])
  ]
  return lines.join('\n')
}

/**
 * A notification as a Slack-compatible incoming-webhook payload: `text` (what every such
 * webhook shows), one legacy `attachments` entry with a colour and fields (Slack, Mattermost
 * and Rocket.Chat read them; others ignore them), and the alert itself under `gatehouse` for
 * receivers that are programs.
 */
export function alertPayload (n: AlertNotification, sender: Sender): Record<string, unknown> {
  return {
    text: `${heading(n)}: ${n.summary}${sender.environment !== null ? ` [${sender.environment}]` : ''}`,
    attachments: [{
      color: n.kind === 'resolved' ? COLOURS.resolved : COLOURS.firing[n.severity],
      title: n.summary,
      text: n.kind === 'resolved' ? `Resolved at ${formatTime(n.at, sender.timezone)}` : n.hint,
      fields: [...n.facts.map(([title, value]) => ({ title, value, short: value.length < 40 })), { title: n.kind === 'resolved' ? 'was firing since' : 'firing since', value: formatTime(n.since, sender.timezone), short: false }],
      footer: `Gatehouse ${sender.version} · ${sender.instance}`,
      ts: Math.floor(n.at / 1000)
    }],
    gatehouse: {
      type: 'alert',
      alert: n.alert,
      key: n.key,
      state: n.kind === 'resolved' ? 'resolved' : 'firing',
      repeat: n.kind === 'repeat',
      severity: n.severity,
      summary: n.summary,
      facts: Object.fromEntries(n.facts),
      since: new Date(n.since).toISOString(),
      at: new Date(n.at).toISOString(),
      instance: sender.instance,
      environment: sender.environment,
      version: sender.version
    }
  }
}

/** The digest's e-mail subject. */
export function digestSubject (prefix: string, d: DigestMessage, sender: Sender): string {
  return `${prefix} Daily digest: ${d.summary}${sender.environment !== null ? ` [${sender.environment}]` : ''}`.trim()
}

/** The digest's plain-text body. */
export function digestText (d: DigestMessage, sender: Sender): string {
  return [
    `Gatehouse daily digest for ${sender.instance}${sender.environment !== null ? ` (${sender.environment})` : ''}, ${formatTime(d.for, sender.timezone)}`,
    '',
    d.summary,
    ...d.sections.flatMap((s) => ['', `${s.title}:`, ...s.lines.map((l) => `  ${l}`)]),
    '',
    `Gatehouse ${sender.version}.${sender.dashboard !== null ? ` Dashboard: ${sender.dashboard}` : ''}`
  ].join('\n')
}

/** The digest as a Slack-compatible payload. */
export function digestPayload (d: DigestMessage, sender: Sender): Record<string, unknown> {
  return {
    text: `Gatehouse daily digest${sender.environment !== null ? ` [${sender.environment}]` : ''}: ${d.summary}`,
    attachments: [{
      color: COLOURS.digest,
      title: `Daily digest, ${formatTime(d.for, sender.timezone)}`,
      fields: d.sections.map((s) => ({ title: s.title, value: s.lines.join('\n'), short: false })),
      footer: `Gatehouse ${sender.version} · ${sender.instance}`,
      ts: Math.floor(d.for / 1000)
    }],
    gatehouse: { type: 'digest', for: new Date(d.for).toISOString(), summary: d.summary, sections: d.sections, instance: sender.instance, environment: sender.environment, version: sender.version }
  }
}
