import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { CodedTypeError } from '../errors.ts'

/** Format version of an encrypted blob; the first byte of every one. */
const VERSION = 1
const KEY_ID_BYTES = 8
const IV_BYTES = 12
const TAG_BYTES = 16

/** Reads a 32-byte key written as 64 hex digits or as base64/base64url; null when it is neither. */
export function decodeKey (text: string): Buffer | null {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex')
  if (/^[A-Za-z0-9+/_-]{43}={0,1}$/.test(text)) {
    const key = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64')
    return key.length === 32 ? key : null
  }
  return null
}

interface RingKey {
  id: Buffer
  key: Buffer
}

/**
 * AES-256-GCM with a key ring (DESIGN §3): the first key encrypts, every key decrypts, so a
 * key rotates by putting a new one first and dropping the old one once nothing it wrote is
 * left. A blob is `version | key id | iv | tag | ciphertext`; the key id is a hash prefix of
 * the key, never the key. `context` is bound as associated data, so a ciphertext copied into
 * another row or column does not decrypt.
 */
export class KeyRing {
  readonly #keys: RingKey[]

  constructor (keys: readonly string[]) {
    if (keys.length === 0) throw new CodedTypeError('KeyRing needs at least one key')
    this.#keys = keys.map((text, i) => {
      const key = decodeKey(text)
      if (key === null) throw new CodedTypeError(`KeyRing key ${i} is not 32 bytes of hex or base64`)
      return { id: createHash('sha256').update(key).digest().subarray(0, KEY_ID_BYTES), key }
    })
  }

  /** Encrypts `plaintext` with the first key, bound to `context`. */
  encrypt (plaintext: string | Buffer, context: string): Buffer {
    const { id, key } = this.#keys[0] as RingKey
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', key, iv)
    cipher.setAAD(Buffer.from(context, 'utf8'))
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()])
    return Buffer.concat([Buffer.of(VERSION), id, iv, cipher.getAuthTag(), body])
  }

  /** Decrypts a blob any ring key wrote for the same `context`; throws when none can. */
  decrypt (blob: Buffer, context: string): Buffer {
    if (blob.length < 1 + KEY_ID_BYTES + IV_BYTES + TAG_BYTES || blob[0] !== VERSION) throw new Error('not an encrypted value')
    const id = blob.subarray(1, 1 + KEY_ID_BYTES)
    const ring = this.#keys.find((k) => timingSafeEqual(k.id, id))
    if (ring === undefined) throw new Error('encrypted with a key no longer in the ring')
    const iv = blob.subarray(1 + KEY_ID_BYTES, 1 + KEY_ID_BYTES + IV_BYTES)
    const tag = blob.subarray(1 + KEY_ID_BYTES + IV_BYTES, 1 + KEY_ID_BYTES + IV_BYTES + TAG_BYTES)
    const decipher = createDecipheriv('aes-256-gcm', ring.key, iv)
    decipher.setAAD(Buffer.from(context, 'utf8'))
    decipher.setAuthTag(tag)
    return Buffer.concat([decipher.update(blob.subarray(1 + KEY_ID_BYTES + IV_BYTES + TAG_BYTES)), decipher.final()])
  }

  /** As {@link decrypt}, as UTF-8 text. */
  decryptText (blob: Buffer, context: string): string {
    return this.decrypt(blob, context).toString('utf8')
  }
}

/** SHA-256 of a secret, for storing session secrets and reset tokens (DESIGN §3). */
export function sha256 (secret: string | Buffer): Buffer {
  return createHash('sha256').update(secret).digest()
}

/** Compares two secrets in constant time (a length difference is not hidden, and need not be). */
export function secretsEqual (a: string | Buffer, b: string | Buffer): boolean {
  const x = Buffer.isBuffer(a) ? a : Buffer.from(a, 'utf8')
  const y = Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8')
  return x.length === y.length && timingSafeEqual(x, y)
}
