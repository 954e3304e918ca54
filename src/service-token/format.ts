import { createHash, randomBytes } from 'node:crypto'
import { crc32 } from 'node:zlib'

/**
 * The service-token format (issue 16): `ght_` + a 12-character identifier + a 43-character
 * secret + a 6-character checksum, all base62, 65 characters in all. The prefix lets secret
 * scanners and people recognise a leaked one (GitHub's `ghp_` tokens work the same way, with
 * a CRC32 checksum so a scanner can tell a real token from random text without asking us).
 * The identifier is public (shown by `tokens list`) and is the lookup key; the secret is
 * 32 random bytes (256 bits: 62^43 > 2^256, so every value fits in 43 characters).
 */
export const SERVICE_TOKEN_PREFIX = 'ght_'

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const ID_LENGTH = 12
const SECRET_LENGTH = 43
const CHECKSUM_LENGTH = 6
/** Length of every service token, in characters. */
export const SERVICE_TOKEN_LENGTH = SERVICE_TOKEN_PREFIX.length + ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
const BASE62 = /^[0-9A-Za-z]+$/

/** A well-formed token, split. */
export interface ParsedToken {
  /** The public identifier: which row to look up. */
  id: string
}

/** Why a string with the prefix is not a service token. */
export type MalformedReason = 'length' | 'alphabet' | 'checksum'

function base62 (value: bigint, length: number): string {
  let out = ''
  for (let n = value; n > 0n; n /= 62n) out = ALPHABET[Number(n % 62n)] + out
  return out.padStart(length, '0')
}

function checksumOf (body: string): string {
  return base62(BigInt(crc32(body)), CHECKSUM_LENGTH)
}

/** A fresh random identifier: 64 bits (62^12 > 2^64, so it always fits in 12 characters). */
export function newIdentifier (): string {
  return base62(BigInt(`0x${randomBytes(8).toString('hex')}`), ID_LENGTH)
}

/** A new token for identifier `id`: 256 random bits and the checksum. */
export function newToken (id: string): string {
  const secret = base62(BigInt(`0x${randomBytes(32).toString('hex')}`), SECRET_LENGTH)
  const body = `${SERVICE_TOKEN_PREFIX}${id}${secret}`
  return body + checksumOf(body)
}

/**
 * Reads a token that starts with the prefix: its identifier, or why it is malformed. Only
 * lengths, the alphabet and the checksum are looked at: nothing here depends on a secret.
 */
export function parseToken (token: string): ParsedToken | { malformed: MalformedReason } {
  if (token.length !== SERVICE_TOKEN_LENGTH) return { malformed: 'length' }
  const rest = token.slice(SERVICE_TOKEN_PREFIX.length)
  if (!BASE62.test(rest)) return { malformed: 'alphabet' }
  const body = token.slice(0, -CHECKSUM_LENGTH)
  if (checksumOf(body) !== token.slice(-CHECKSUM_LENGTH)) return { malformed: 'checksum' }
  return { id: rest.slice(0, ID_LENGTH) }
}

/** What is stored of a token: the SHA-256 of the whole of it (32 bytes). */
export function tokenDigest (token: string): Buffer {
  return createHash('sha256').update(token).digest()
}
