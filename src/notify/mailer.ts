import type { Transporter } from 'nodemailer'
import type { Config } from '../config/schema.ts'

/** One message to send. Bodies are plain text: every client reads them, none runs them. */
export interface MailMessage {
  to: readonly string[]
  subject: string
  text: string
}

/** Outgoing e-mail through `smtp` (nodemailer's SMTP transport). */
export interface Mailer {
  /** Sends one message; rejects when the server refused it or could not be reached in time. */
  send: (message: MailMessage) => Promise<void>
  /** Connects, upgrades and authenticates as a send would, without sending (`doctor diagnose`). */
  verify: () => Promise<void>
  /** Closes pooled connections. */
  close: () => void
}

/**
 * A {@link Mailer} for `config.smtp`, or null when no SMTP host is configured. TLS follows
 * `smtp.tls`: `starttls` refuses to send unless the server upgrades (RFC 3207; nodemailer's
 * `requireTLS`), `implicit` is TLS from the first byte (RFC 8314 §3.3), `none` never upgrades
 * (a relay on the same host). nodemailer's own logger stays off: a message body can hold a
 * password reset link, which must never reach a log. nodemailer is loaded at the first send,
 * not at start-up, which it would otherwise cost every sidecar that never mails.
 */
export function createMailer (smtp: Config['smtp']): Mailer | null {
  if (smtp.host === undefined || smtp.from === undefined) return null
  const from = smtp.from
  const host = smtp.host
  let transport: Promise<Transporter> | null = null
  const connect = async (): Promise<Transporter> => await (transport ??= import('nodemailer').then(({ default: nodemailer }) => nodemailer.createTransport({
    host,
    port: smtp.port,
    secure: smtp.tls === 'implicit',
    requireTLS: smtp.tls === 'starttls',
    ignoreTLS: smtp.tls === 'none',
    ...(smtp.username !== undefined ? { auth: { user: smtp.username, pass: smtp.password ?? '' } } : {}),
    connectionTimeout: smtp.timeout_ms,
    greetingTimeout: smtp.timeout_ms,
    socketTimeout: smtp.timeout_ms,
    logger: false,
    debug: false
  })))
  return {
    send: async (message) => {
      await (await connect()).sendMail({ from, to: [...message.to], subject: message.subject, text: message.text })
    },
    verify: async () => { await (await connect()).verify() },
    close: () => { void transport?.then((t) => { t.close() }) }
  }
}
