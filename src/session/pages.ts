import { randomBytes } from 'node:crypto'

/**
 * Gatehouse's own pages: plain server-rendered HTML that works without JavaScript, with
 * labelled fields. Every value is escaped; styles carry a per-response nonce so the CSP can
 * forbid everything else.
 */

/** A rendered page and the nonce its CSP must allow. */
export interface Page {
  html: string
  nonce: string
}

export function escapeHtml (value: string): string {
  return value.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string)
}

const STYLE = `body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}input[type=text],input[type=password]{width:100%;padding:.45rem;box-sizing:border-box}
button{margin-top:1rem;padding:.5rem 1.2rem}.notice{background:#fff4d6;border:1px solid #e0b84c;padding:.6rem .8rem}
.error{background:#fde2e1;border:1px solid #d9534f;padding:.6rem .8rem}.ok{background:#e3f6e5;border:1px solid #4caf50;padding:.6rem .8rem}`

function page (title: string, body: string): Page {
  const nonce = randomBytes(16).toString('base64')
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style nonce="${nonce}">${STYLE}</style></head>
<body><main>
<h1>${escapeHtml(title)}</h1>
${body}
</main></body></html>
`
  return { html, nonce }
}

function messages (m: { notice?: string | undefined, error?: string | undefined, ok?: string | undefined }): string {
  return [
    m.notice === undefined ? '' : `<p class="notice" role="status">${escapeHtml(m.notice)}</p>`,
    m.error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(m.error)}</p>`,
    m.ok === undefined ? '' : `<p class="ok" role="status">${escapeHtml(m.ok)}</p>`
  ].join('\n')
}

/** The local login form; with `resetHref`, a "Forgot your password?" link under it. */
export function loginPage (p: { action: string, rd: string, csrf: string, username?: string, notice?: string, error?: string, resetHref?: string }): Page {
  return page('Sign in', `${messages(p)}
<form method="post" action="${escapeHtml(p.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(p.csrf)}">
<input type="hidden" name="rd" value="${escapeHtml(p.rd)}">
<label for="username">User name</label>
<input id="username" name="username" type="text" autocomplete="username" required value="${escapeHtml(p.username ?? '')}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>${p.resetHref === undefined ? '' : `\n<p><a href="${escapeHtml(p.resetHref)}">Forgot your password?</a></p>`}`)
}

/** The password reset request form: a user name or an e-mail address. */
export function resetRequestPage (p: { action: string, csrf: string, error?: string, ok?: string }): Page {
  return page('Reset your password', `${messages(p)}
<p>Enter your user name or e-mail address. If your account can reset its password here, a link is sent to its e-mail address.</p>
<form method="post" action="${escapeHtml(p.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(p.csrf)}">
<label for="identifier">User name or e-mail address</label>
<input id="identifier" name="identifier" type="text" autocomplete="username" required maxlength="256">
<button type="submit">Send the link</button>
</form>`)
}

/** The new-password form a reset link opens. */
export function resetPasswordPage (p: { action: string, csrf: string, token: string, minLength: number, error?: string }): Page {
  return page('Choose a new password', `${messages(p)}
<form method="post" action="${escapeHtml(p.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(p.csrf)}">
<input type="hidden" name="token" value="${escapeHtml(p.token)}">
<label for="new">New password (at least ${p.minLength} characters)</label>
<input id="new" name="new" type="password" autocomplete="new-password" required minlength="${p.minLength}">
<label for="confirm">New password again</label>
<input id="confirm" name="confirm" type="password" autocomplete="new-password" required>
<button type="submit">Set the password</button>
</form>`)
}

/** Logout confirmation (a GET must not log anyone out: links can be forged). */
export function logoutPage (p: { action: string, rd: string, csrf: string }): Page {
  return page('Sign out', `<p>Do you want to sign out?</p>
<form method="post" action="${escapeHtml(p.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(p.csrf)}">
<input type="hidden" name="rd" value="${escapeHtml(p.rd)}">
<button type="submit">Sign out</button>
</form>`)
}

/** The change-password form. */
export function passwordPage (p: { action: string, csrf: string, minLength: number, error?: string, ok?: string, notice?: string }): Page {
  return page('Change password', `${messages(p)}
<form method="post" action="${escapeHtml(p.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(p.csrf)}">
<label for="current">Current password</label>
<input id="current" name="current" type="password" autocomplete="current-password" required>
<label for="new">New password (at least ${p.minLength} characters)</label>
<input id="new" name="new" type="password" autocomplete="new-password" required minlength="${p.minLength}">
<label for="confirm">New password again</label>
<input id="confirm" name="confirm" type="password" autocomplete="new-password" required>
<button type="submit">Change password</button>
</form>`)
}

/** A page that only says something, with an optional link onward. */
export function messagePage (title: string, message: string, link?: { href: string, text: string }): Page {
  return page(title, `<p>${escapeHtml(message)}</p>${link === undefined ? '' : `\n<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.text)}</a></p>`}`)
}
