import { randomBytes } from 'node:crypto'
import { secretsEqual } from '../store/crypto.ts'

/** A fresh CSRF token: 256 random bits, base64url. */
export function newCsrfToken (): string {
  return randomBytes(32).toString('base64url')
}

/**
 * Double-submit check: the token in the form (or the `X-CSRF-Token` header) must equal the
 * one in Gatehouse's signed, SameSite=Strict CSRF cookie, which another site can neither
 * read nor set. Compared in constant time.
 */
export function csrfMatches (cookieToken: string | null, submitted: unknown): boolean {
  return cookieToken !== null && typeof submitted === 'string' && submitted.length > 0 && secretsEqual(cookieToken, submitted)
}
