import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import type { Mailer } from '../notify/mailer.ts'
import { postWebhook } from '../notify/webhook.ts'
import type { AlertRecord, AlertStateRepository } from '../store/alert-state.ts'
import type { MetaRepository } from '../store/meta.ts'
import { evaluateConditions, type AlertInputs, type AlertObservation } from './conditions.ts'
import { alertPayload, alertSubject, alertText, digestPayload, digestSubject, digestText, type AlertNotification, type DigestMessage, type Sender } from './messages.ts'
import { latestOccurrence } from './schedule.ts'

/** Where notifications go: the webhook, e-mail. */
export interface AlertChannel {
  name: 'webhook' | 'email'
  alert: (n: AlertNotification, sender: Sender) => Promise<void>
  digest: (d: DigestMessage, sender: Sender) => Promise<void>
}

/** The channels `alerts` enables; none when a channel is disabled (then nothing is sent on it). */
export function configuredChannels (alerts: Config['alerts'], mailer: Mailer | null): AlertChannel[] {
  const channels: AlertChannel[] = []
  const hook = alerts.webhook
  if (hook.enabled && hook.url !== undefined) {
    const url = hook.url
    channels.push({
      name: 'webhook',
      alert: (n, sender) => postWebhook(url, alertPayload(n, sender), hook.timeout_ms),
      digest: (d, sender) => postWebhook(url, digestPayload(d, sender), hook.timeout_ms)
    })
  }
  const mail = alerts.email
  if (mail.enabled && mailer !== null && mail.to.length > 0) {
    channels.push({
      name: 'email',
      alert: (n, sender) => mailer.send({ to: mail.to, subject: alertSubject(mail.subject_prefix, n, sender), text: alertText(n, sender) }),
      digest: (d, sender) => mailer.send({ to: mail.to, subject: digestSubject(mail.subject_prefix, d, sender), text: digestText(d, sender) })
    })
  }
  return channels
}

/** Counters the engine updates. */
export interface AlertMetrics {
  notifications: { inc: (labels: { channel: string, result: string }) => void }
}

/** Options of {@link AlertEngine}. */
export interface AlertEngineOptions {
  alerts: Config['alerts']
  repository: AlertStateRepository
  meta: MetaRepository
  channels: AlertChannel[]
  sender: Sender
  clock: Clock
  log: Logger
  metrics: AlertMetrics
}

const DIGEST_KEY = 'alerts_digest'

/**
 * Turns what the conditions observe into notifications, once each: an alert is sent when it
 * starts firing, again only after `repeat_interval_minutes` while it lasts (or at once when its
 * severity changes), and its resolution once when the condition clears. What was sent is kept
 * in SQLite (`alert_state`) before anything is sent, so a restart neither repeats a firing
 * alert early nor loses a resolution, and a channel that fails is not retried in a storm: its
 * failure is logged and counted (`gatehouse_alert_notifications_total`), and the next attempt
 * is the next repeat.
 */
export class AlertEngine {
  readonly #o: AlertEngineOptions
  #running: Promise<AlertNotification[]> | null = null

  constructor (options: AlertEngineOptions) {
    this.#o = options
  }

  /** The channels notifications go to. */
  get channels (): readonly string[] {
    return this.#o.channels.map((c) => c.name)
  }

  /** Every alert instance the engine knows, firing first. */
  state (): AlertRecord[] {
    return this.#o.repository.all()
  }

  /** Evaluates once and sends what is due; resolves to what was sent. An evaluation already running is joined. */
  evaluate (inputs: AlertInputs): Promise<AlertNotification[]> {
    this.#running ??= this.#evaluate(inputs).finally(() => { this.#running = null })
    return this.#running
  }

  async #evaluate (inputs: AlertInputs): Promise<AlertNotification[]> {
    const now = this.#o.clock.now()
    const observations = evaluateConditions(inputs, this.#o.alerts)
    const due: AlertNotification[] = []
    const seen = new Set<string>()
    for (const o of observations) {
      seen.add(o.key)
      const n = this.#decide(o, now)
      if (n !== null) due.push(n)
    }
    // A firing instance nobody observes any more (a server removed from the configuration)
    // is resolved, so it does not stay firing for ever.
    for (const record of this.#o.repository.all()) {
      if (record.state !== 'firing' || seen.has(record.key)) continue
      const n: AlertNotification = { kind: 'resolved', key: record.key, alert: record.alert, severity: record.severity, summary: `${record.summary} (no longer monitored)`, facts: [], hint: '', since: record.since, at: now }
      this.#o.repository.put({ ...record, state: 'resolved', since: now, lastSentAt: now, updatedAt: now }, { at: now, key: record.key, alert: record.alert, state: 'resolved', severity: record.severity, summary: n.summary })
      due.push(n)
    }
    for (const n of due) await this.#send(n)
    return due
  }

  // What to send for one observation, recording the new state first.
  #decide (o: AlertObservation, now: number): AlertNotification | null {
    const { repository } = this.#o
    const before = repository.get(o.key)
    const firing = before?.state === 'firing'
    const base = { key: o.key, alert: o.alert, severity: o.severity, summary: o.summary, facts: o.facts, hint: o.hint, at: now }
    if (o.status === 'firing') {
      if (!firing) {
        repository.put({ key: o.key, alert: o.alert, state: 'firing', severity: o.severity, summary: o.summary, since: now, lastSentAt: now, updatedAt: now },
          { at: now, key: o.key, alert: o.alert, state: 'firing', severity: o.severity, summary: o.summary })
        return { ...base, kind: 'firing', since: now }
      }
      const record = before as AlertRecord
      const escalated = record.severity !== o.severity
      const repeat = record.lastSentAt === null || now - record.lastSentAt >= this.#o.alerts.repeat_interval_minutes * 60_000
      if (!escalated && !repeat) {
        repository.put({ ...record, summary: o.summary, updatedAt: now })
        return null
      }
      repository.put({ ...record, severity: o.severity, summary: o.summary, lastSentAt: now, updatedAt: now },
        escalated ? { at: now, key: o.key, alert: o.alert, state: 'firing', severity: o.severity, summary: o.summary } : undefined)
      return { ...base, kind: escalated ? 'firing' : 'repeat', since: record.since }
    }
    if (o.status === 'clear' && firing) {
      const record = before as AlertRecord
      repository.put({ ...record, state: 'resolved', summary: o.summary, since: now, lastSentAt: now, updatedAt: now },
        { at: now, key: o.key, alert: o.alert, state: 'resolved', severity: record.severity, summary: o.summary })
      return { ...base, severity: record.severity, kind: 'resolved', since: record.since }
    }
    return null
  }

  async #send (n: AlertNotification): Promise<void> {
    const { log } = this.#o
    // The state change is news once, at warn (HOUSE-STYLE §5), whether or not a channel is on.
    if (n.kind === 'resolved') log.warn({ alert: n.alert, key: n.key }, 'alert resolved')
    else log.warn({ alert: n.alert, key: n.key, severity: n.severity, repeat: n.kind === 'repeat' }, 'alert firing')
    await Promise.all(this.#o.channels.map(async (channel) => {
      try {
        await channel.alert(n, this.#o.sender)
        this.#o.metrics.notifications.inc({ channel: channel.name, result: 'sent' })
      } catch (err) {
        this.#o.metrics.notifications.inc({ channel: channel.name, result: 'failed' })
        // The message, never the channel's URL (an incoming webhook's URL is its secret).
        log.warn({ channel: channel.name, alert: n.alert, reason: (err as Error).message }, 'alert notification failed')
      }
    }))
  }

  /**
   * Sends the daily digest when one is due (`daily_digest_time` has passed since the last
   * one), built by `build` only then; resolves to the digest sent, or null. The first start
   * with a digest time records the latest occurrence without sending, so that deploying at
   * 14:00 does not send the 08:00 digest; a digest is never sent twice for the same day, and
   * one missed while the process was down is sent when it comes back.
   */
  async digestIfDue (build: (forMs: number) => Promise<DigestMessage> | DigestMessage): Promise<DigestMessage | null> {
    const time = this.#o.alerts.daily_digest_time
    if (time === undefined) return null
    const now = this.#o.clock.now()
    const due = latestOccurrence(now, time, this.#o.alerts.timezone)
    const last = this.#o.meta.get<{ for: number, sent_at: number | null }>(DIGEST_KEY)
    if (last === null) {
      this.#o.meta.put(DIGEST_KEY, { for: due, sent_at: null }, now)
      return null
    }
    if (last.value.for >= due) return null
    // Recorded first: a crash while sending loses one digest rather than sending two.
    this.#o.meta.put(DIGEST_KEY, { for: due, sent_at: now }, now)
    const digest = await build(due)
    await Promise.all(this.#o.channels.map(async (channel) => {
      try {
        await channel.digest(digest, this.#o.sender)
        this.#o.metrics.notifications.inc({ channel: channel.name, result: 'sent' })
      } catch (err) {
        this.#o.metrics.notifications.inc({ channel: channel.name, result: 'failed' })
        this.#o.log.warn({ channel: channel.name, reason: (err as Error).message }, 'daily digest failed')
      }
    }))
    this.#o.log.info({ for: new Date(due).toISOString(), channels: this.channels }, 'daily digest sent')
    return digest
  }
}
