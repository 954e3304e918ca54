import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/** scrypt cost parameters, stored with each hash so they can be raised later. */
export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  N: number
  r: number
  p: number
}

/**
 * Default cost: N=2^15, r=8, p=1 (32 MiB, about 50 ms a hash on a small core), the
 * interactive-login parameters of RFC 7914's authors and OWASP's current minimum.
 */
export const DEFAULT_SCRYPT: ScryptParams = { N: 2 ** 15, r: 8, p: 1 }
const KEY_BYTES = 64
const SALT_BYTES = 16

function scrypt (password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  // maxmem must exceed 128 * N * r * p or node refuses the parameters.
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r * params.p }
  return new Promise((resolve, reject) => {
    scryptCallback(password.normalize('NFC'), salt, KEY_BYTES, options, (err, key) => (err === null ? resolve(key) : reject(err)))
  })
}

/** Hashes a password: `scrypt$N$r$p$salt$hash` (base64url). Runs on libuv's thread pool. */
export async function hashPassword (password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const key = await scrypt(password, salt, params)
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64url'), key.toString('base64url')].join('$')
}

/**
 * A hash in {@link hashPassword}'s format that no password is known to match: a random salt
 * and a random key. Checking a password against it costs one scrypt of `params`, as against
 * a real hash, without the scrypt that making a real one would cost (start-up used to pay 50 ms
 * of CPU for a dummy password's hash).
 */
export function unmatchableHash (params: ScryptParams = DEFAULT_SCRYPT): string {
  return ['scrypt', params.N, params.r, params.p, randomBytes(SALT_BYTES).toString('base64url'), randomBytes(KEY_BYTES).toString('base64url')].join('$')
}

/**
 * Checks a password against an encoded hash, in constant time. A malformed hash is a
 * mismatch, never an error.
 */
export async function verifyPassword (password: string, encoded: string): Promise<boolean> {
  const parts = encoded.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])]
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0)) return false
  const salt = Buffer.from(parts[4] as string, 'base64url')
  const expected = Buffer.from(parts[5] as string, 'base64url')
  const actual = await scrypt(password, salt, { N, r, p })
  return actual.length === expected.length && timingSafeEqual(actual, expected)
}

/** True when a hash was made with weaker parameters than `params` (re-hash on next login). */
export function needsRehash (encoded: string, params: ScryptParams = DEFAULT_SCRYPT): boolean {
  const parts = encoded.split('$')
  return Number(parts[1]) < params.N || Number(parts[2]) < params.r || Number(parts[3]) < params.p
}

/** The password rules of `local_auth.password_policy`. */
export interface PasswordPolicy {
  min_length: number
  not_username: boolean
  not_current: boolean
}

/**
 * Checks a new password against the policy; returns what is wrong, for a person to read, or
 * null. (Whether it equals the current one is checked by the caller, which knows it.)
 */
export function passwordProblem (password: string, username: string, policy: PasswordPolicy): string | null {
  if ([...password].length < policy.min_length) return `The new password must be at least ${policy.min_length} characters long.`
  if (policy.not_username && username.length > 0 && password.toLowerCase().includes(username.toLowerCase())) return 'The new password must not contain your user name.'
  return null
}
