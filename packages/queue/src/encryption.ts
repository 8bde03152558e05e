import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { keelError } from 'keel';

/** Options of {@link payloadCipher}: the `encryption` option of `openQueue`. */
export interface EncryptionOptions {
  /** 32 bytes: a Buffer, 64 hex characters or base64 (e.g. `openssl rand -base64 32`). */
  key: string | Buffer | Uint8Array;
}

/** Encrypts and decrypts stored payloads. */
export interface PayloadCipher {
  /** An id derived from the key (not the key): stored with each payload to tell keys apart. */
  readonly keyId: string;
  encrypt(plaintext: string): string;
  /** @throws KeelError `QUEUE_DECRYPT_FAILED` for a payload of another key, a damaged one or an unknown format. */
  decrypt(stored: string): string;
}

/** Stored payloads that start with this are encrypted envelopes; JSON text never starts with `~`. */
const PREFIX = '~k';
const VERSION = 1;
const KEY_ID_BYTES = 8;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + KEY_ID_BYTES;

/** True when a stored payload is an encrypted envelope. */
export function isEncryptedPayload(stored: string): boolean {
  return stored.startsWith(PREFIX);
}

function parseKey(key: EncryptionOptions['key'] | undefined): Buffer {
  let bytes: Buffer | undefined;
  if (Buffer.isBuffer(key) || key instanceof Uint8Array) bytes = Buffer.from(key);
  else if (typeof key === 'string') {
    const s = key.trim();
    if (/^[0-9a-f]{64}$/i.test(s)) bytes = Buffer.from(s, 'hex');
    else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(s)) bytes = Buffer.from(s, 'base64');
  }
  if (!bytes || bytes.length !== 32) {
    // Never echo the key: only what kind of value it was and its decoded length.
    const what =
      bytes === undefined
        ? typeof key === 'string'
          ? 'a string that is neither hex nor base64'
          : typeof key
        : `${String(bytes.length)} bytes`;
    throw keelError(
      'INVALID_CONFIG',
      `queue option encryption.key must be 32 bytes (a Buffer, 64 hex characters or base64 of 32 bytes); got ${what}`,
    );
  }
  return bytes;
}

/**
 * AES-256-GCM for queue payloads (node:crypto). Each payload gets a random 12-byte IV; the stored
 * text is `~k` + base64(version byte, 8-byte key id, IV, auth tag, ciphertext), with the version
 * and key id authenticated. A wrong key or a damaged payload is a `QUEUE_DECRYPT_FAILED` error,
 * never garbage.
 * @throws KeelError `INVALID_CONFIG` when the key is not 32 bytes (the message never contains it).
 */
export function payloadCipher(options: EncryptionOptions): PayloadCipher {
  const key = parseKey((options as Partial<EncryptionOptions> | undefined)?.key);
  const keyIdBytes = createHash('sha256')
    .update('keel-queue-key-id\0')
    .update(key)
    .digest()
    .subarray(0, KEY_ID_BYTES);
  const keyId = keyIdBytes.toString('hex');
  const header = Buffer.concat([Buffer.from([VERSION]), keyIdBytes]);
  const failed = (why: string): Error =>
    keelError('QUEUE_DECRYPT_FAILED', `could not decrypt a queue payload: ${why}`, { keyId });
  return {
    keyId,
    encrypt(plaintext) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(header);
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return PREFIX + Buffer.concat([header, iv, cipher.getAuthTag(), body]).toString('base64');
    },
    decrypt(stored) {
      if (!isEncryptedPayload(stored))
        throw failed('it is not encrypted (stored before encryption was turned on?)');
      const raw = Buffer.from(stored.slice(PREFIX.length), 'base64');
      if (raw.length < HEADER_BYTES + IV_BYTES + TAG_BYTES) throw failed('the stored envelope is truncated');
      if (raw[0] !== VERSION) throw failed(`unknown envelope version ${String(raw[0])}`);
      const storedKeyId = raw.subarray(1, HEADER_BYTES).toString('hex');
      if (storedKeyId !== keyId)
        throw failed(
          `it was encrypted with key id ${storedKeyId}, but the configured key has id ${keyId} (wrong encryption.key)`,
        );
      const iv = raw.subarray(HEADER_BYTES, HEADER_BYTES + IV_BYTES);
      const tag = raw.subarray(HEADER_BYTES + IV_BYTES, HEADER_BYTES + IV_BYTES + TAG_BYTES);
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, iv);
        decipher.setAAD(raw.subarray(0, HEADER_BYTES));
        decipher.setAuthTag(tag);
        return Buffer.concat([
          decipher.update(raw.subarray(HEADER_BYTES + IV_BYTES + TAG_BYTES)),
          decipher.final(),
        ]).toString('utf8');
      } catch {
        throw failed('authentication failed (the payload was altered or the key is wrong)');
      }
    },
  };
}
