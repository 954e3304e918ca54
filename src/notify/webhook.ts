/**
 * POSTs `payload` as JSON to `url` within `timeoutMs`; resolves on a 2xx answer, rejects with
 * the status otherwise. No redirect is followed: an incoming-webhook URL that redirects is
 * misconfigured, and following it would carry the payload somewhere not configured.
 */
export async function postWebhook (url: string, payload: unknown, timeoutMs: number): Promise<void> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': 'gatehouse-alerts' },
    body: JSON.stringify(payload),
    redirect: 'manual',
    signal: AbortSignal.timeout(timeoutMs)
  })
  await response.body?.cancel().catch(() => {})
  if (response.status < 200 || response.status >= 300) throw new Error(`the webhook answered ${response.status}`)
}
