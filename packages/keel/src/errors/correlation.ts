import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

const storage = new AsyncLocalStorage<string>();

/**
 * Runs `fn` with `id` as the correlation id of everything it does, including asynchronous work it
 * starts; KeelErrors created inside carry it, and keel's loggers print it.
 */
export function withCorrelation<T>(id: string, fn: () => T): T {
  return storage.run(id, fn);
}

/** The correlation id of the current request or operation, if one was set. */
export function correlationId(): string | undefined {
  return storage.getStore();
}

/** A new random correlation id (a UUID). */
export function newCorrelationId(): string {
  return randomUUID();
}
