import { isKeelError, exponential } from 'keel';

/** Default waits between store calls while the store is unavailable: 50 ms to 5 s, equal jitter. */
export const DEFAULT_RECONNECT = exponential({ initialMs: 50, maxMs: 5000, jitter: 'equal' });

/** True for the store's "unreachable, try again" error, the only one that is waited out. */
export const isStoreUnavailable = (err: unknown): boolean =>
  isKeelError(err) && err.code === 'QUEUE_STORE_UNAVAILABLE';

/**
 * Whether the store answered the last call a queue instance made (enqueue commits, claims,
 * completions and failures all report here), for `Queue.storeAvailable`.
 */
export class StoreHealth {
  private unreachable = false;

  /** Notes the outcome of a store call: no argument when it reached the store, else its error. */
  observe(err?: unknown): void {
    this.unreachable = err !== undefined && isStoreUnavailable(err);
  }

  /** False while the last call found the store unreachable. */
  get available(): boolean {
    return !this.unreachable;
  }
}
