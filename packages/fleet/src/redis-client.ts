import { Redis } from 'ioredis';
import { redactRedisUrl } from './redis-url.js';

/** Bounds of every connection to the coordinator's Redis. */
export interface RedisClientOptions {
  /** A command unanswered this long fails (default 2,000 ms): the call falls back, and two heartbeats failing in a row mean Redis is down. */
  commandTimeoutMs?: number;
  /** Connecting gives up after this long (default 2,000 ms), then retries in the background. */
  connectTimeoutMs?: number;
  /** Longest wait between reconnection attempts (default 2,000 ms). */
  maxReconnectDelayMs?: number;
  /** Reconnect in the background after a failure (default true; false for a one-off command). */
  reconnect?: boolean;
}

/**
 * An ioredis client that never queues a command while disconnected (it fails at once: the
 * caller falls back), retries each command at most once, times commands out, and reconnects in
 * the background forever with a capped delay. Errors go to `onError` with the URL's password
 * redacted, never thrown as events.
 */
export function createRedisClient(
  url: string,
  onError: (message: string) => void,
  options: RedisClientOptions = {},
): Redis {
  const maxDelay = options.maxReconnectDelayMs ?? 2_000;
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: options.commandTimeoutMs ?? 2_000,
    connectTimeout: options.connectTimeoutMs ?? 2_000,
    autoResubscribe: false,
    enableReadyCheck: true,
    retryStrategy: (times) => (options.reconnect === false ? null : Math.min(times * 200, maxDelay)),
  });
  const shown = redactRedisUrl(url);
  client.on('error', (err: Error) => {
    onError(`coordinator Redis ${shown}: ${err.message.split(url).join(shown)}`);
  });
  return client;
}
