import { keelError } from 'keel';
import { isEncryptedPayload, type PayloadCipher } from './encryption.js';

/** Turns payloads into the text a queue stores (JSON, encrypted when a cipher is set) and back. */
export class PayloadCodec<T> {
  constructor(
    private readonly queueName: string,
    private readonly cipher?: PayloadCipher,
  ) {}

  /** True when payloads can be read back even if they were stored encrypted. */
  get hasKey(): boolean {
    return this.cipher !== undefined;
  }

  /**
   * The stored form of `payload`.
   * @throws KeelError `INVALID_INPUT` when the payload is not JSON-serialisable.
   */
  encode(payload: T): string {
    const json = JSON.stringify(payload) as string | undefined;
    if (json === undefined)
      throw keelError(
        'INVALID_INPUT',
        `enqueue: the payload must be JSON-serialisable, got ${typeof payload}`,
      );
    return this.cipher ? this.cipher.encrypt(json) : json;
  }

  /**
   * The payload of a stored item.
   * @throws KeelError `QUEUE_DECRYPT_FAILED` when it is encrypted and no key is set, or the key
   *   does not open it.
   */
  decode(stored: string): T {
    if (this.cipher) return JSON.parse(this.cipher.decrypt(stored)) as T;
    if (isEncryptedPayload(stored))
      throw keelError(
        'QUEUE_DECRYPT_FAILED',
        `an item of queue "${this.queueName}" is encrypted but no encryption.key is configured`,
      );
    return JSON.parse(stored) as T;
  }
}
