import { createServer, type IncomingMessage, type Server } from 'node:http'

const IDENTITY_PREFIX = 'x-auth-request-'

/** What the demo app saw of one request. */
export interface Seen {
  method: string
  path: string
  identity: Record<string, string>
  forwarded: Record<string, string>
}

function describe (req: IncomingMessage): Seen {
  const pick = (test: (name: string) => boolean): Record<string, string> =>
    Object.fromEntries(Object.entries(req.headers).filter(([name]) => test(name)).map(([name, value]) => [name, String(value)]))
  return {
    method: req.method ?? '',
    path: req.url ?? '',
    identity: pick((name) => name.startsWith(IDENTITY_PREFIX)),
    forwarded: pick((name) => name.startsWith('x-forwarded-') || name === 'x-request-id')
  }
}

function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function page (seen: Seen): string {
  const rows = (headers: Record<string, string>): string => Object.entries(headers)
    .map(([name, value]) => `<tr><th>${escapeHtml(name)}</th><td>${escapeHtml(value)}</td></tr>`).join('') || '<tr><td colspan="2">none</td></tr>'
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Demo app behind Gatehouse</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}table{border-collapse:collapse}th,td{text-align:left;padding:.3rem .8rem;border-bottom:1px solid #ddd}th{font-weight:600}</style>
</head><body><h1>Demo app</h1><p>This page is the app behind Gatehouse. It trusts only what Gatehouse tells it.</p>
<p><strong>${escapeHtml(seen.method)} ${escapeHtml(seen.path)}</strong></p>
<h2>Identity headers received</h2><table>${rows(seen.identity)}</table>
<h2>Forwarding headers received</h2><table>${rows(seen.forwarded)}</table></body></html>`
}

/**
 * The demo app: shows the identity headers it received, as HTML for a browser or as JSON
 * for `Accept: application/json`.
 */
export function createDemoUpstream (): Server {
  return createServer((req, res) => {
    const seen = describe(req)
    if ((req.headers.accept ?? '').includes('text/html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      res.end(page(seen))
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(seen, null, 2) + '\n')
  })
}
