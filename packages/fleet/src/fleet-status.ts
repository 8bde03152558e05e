import { classify, wrap } from 'keel';
import { liveInstances, type InstanceStatus } from './instances.js';
import { fleetKeys } from './keys.js';
import { createRedisClient } from './redis-client.js';
import { redactRedisUrl } from './redis-url.js';

/**
 * The live instances of the fleet coordinated through the Redis at `url` (heartbeats not
 * expired), oldest first.
 * @throws KeelError (the connection's code, ECONNREFUSED's `CONNECTION_REFUSED` for one) when Redis
 * cannot be reached within about two seconds; the message names the URL with its password redacted.
 */
export async function readFleetStatus(url: string, prefix?: string): Promise<InstanceStatus[]> {
  const redis = createRedisClient(url, () => undefined, { reconnect: false });
  // What the connection failed with (connect() itself only says the connection closed).
  let failure: unknown;
  redis.on('error', (err: unknown) => (failure ??= err));
  try {
    try {
      await redis.connect();
    } catch (err) {
      const cause = failure ?? err;
      const shown = redactRedisUrl(url);
      throw wrap(
        cause,
        classify(cause).code,
        `could not reach the fleet's Redis at ${shown}: ${classify(cause).message.split(url).join(shown)}`,
      );
    }
    return await liveInstances(redis, fleetKeys(prefix));
  } finally {
    redis.disconnect();
  }
}
