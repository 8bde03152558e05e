import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isKeelError } from 'keel';
import { isEncryptedPayload, payloadCipher } from './encryption.js';
import { openQueue } from './queue.js';

const KEY = Buffer.alloc(32, 1);
const OTHER = Buffer.alloc(32, 2);

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('payload encryption (AES-256-GCM)', () => {
  it('round-trips any text, with a fresh IV each time', () => {
    const c = payloadCipher({ key: KEY });
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(c.decrypt(c.encrypt(s))).toBe(s);
      }),
    );
    expect(c.encrypt('same')).not.toBe(c.encrypt('same'));
    expect(isEncryptedPayload(c.encrypt('{"a":1}'))).toBe(true);
    expect(isEncryptedPayload('{"a":1}')).toBe(false);
  });

  it('accepts the key as a Buffer, 64 hex characters or base64, with the same key id', () => {
    const ids = [KEY, KEY.toString('hex'), KEY.toString('base64'), new Uint8Array(KEY)].map(
      (key) => payloadCipher({ key }).keyId,
    );
    expect(new Set(ids).size).toBe(1);
    expect(payloadCipher({ key: OTHER }).keyId).not.toBe(ids[0]);
  });

  it('refuses a wrong key with QUEUE_DECRYPT_FAILED naming the key ids, never garbage', () => {
    const stored = payloadCipher({ key: KEY }).encrypt('{"card":"4111"}');
    const err = thrown(() => payloadCipher({ key: OTHER }).decrypt(stored));
    expect(err).toMatchObject({ code: 'QUEUE_DECRYPT_FAILED', retryable: false });
    expect((err as Error).message).toMatch(/wrong encryption\.key/);
  });

  it('refuses an altered, truncated or unencrypted payload', () => {
    const c = payloadCipher({ key: KEY });
    const stored = c.encrypt('{"n":1}');
    const raw = Buffer.from(stored.slice(2), 'base64');
    raw[raw.length - 1] = (raw[raw.length - 1] ?? 0) ^ 1;
    const altered = `~k${raw.toString('base64')}`;
    expect(thrown(() => c.decrypt(altered))).toMatchObject({
      code: 'QUEUE_DECRYPT_FAILED',
      message: /authentication failed/,
    });
    expect(thrown(() => c.decrypt(stored.slice(0, 20)))).toMatchObject({ code: 'QUEUE_DECRYPT_FAILED' });
    expect(thrown(() => c.decrypt('{"n":1}'))).toMatchObject({
      code: 'QUEUE_DECRYPT_FAILED',
      message: /not encrypted/,
    });
  });

  it('answers any stored text with the plaintext or QUEUE_DECRYPT_FAILED, never another error', () => {
    const c = payloadCipher({ key: KEY });
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.base64String().map((s) => `~k${s}`),
        ),
        (s) => {
          try {
            c.decrypt(s);
          } catch (err) {
            expect(isKeelError(err) && err.code === 'QUEUE_DECRYPT_FAILED').toBe(true);
          }
        },
      ),
    );
  });

  it.each([
    ['a short Buffer', Buffer.alloc(16, 9), /got 16 bytes/],
    ['hex of 31 bytes', 'ab'.repeat(31), /got 31 bytes/],
    ['a passphrase', 'correct horse battery staple!', /neither hex nor base64/],
    ['nothing', undefined, /encryption\.key/],
  ])(
    'refuses %s as the key with INVALID_CONFIG naming encryption.key, without echoing it',
    (_what, key, message) => {
      const err = thrown(() => payloadCipher({ key: key as string }));
      expect(err).toMatchObject({ code: 'INVALID_CONFIG', message });
      expect((err as Error).message).toMatch(/encryption\.key must be 32 bytes/);
      if (typeof key === 'string') expect(JSON.stringify(err)).not.toContain(key);
    },
  );

  it('is checked when the queue opens', async () => {
    await expect(openQueue(':memory:', { encryption: { key: 'abc' } })).rejects.toMatchObject({
      code: 'INVALID_CONFIG',
      message: /encryption\.key/,
    });
  });
});
