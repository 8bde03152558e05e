import { liveInstances, type InstanceStatus } from './instances.js';
import { fleetKeys } from './keys.js';
import { createRedisClient } from './redis-client.js';
import { redactRedisUrl } from './redis-url.js';

/**
 * The live instances of the fleet coordinated through the Redis at `url` (heartbeats not
 * expired), oldest first.
 * @throws Error when Redis cannot be reached within about two seconds (the URL's password redacted).
 */
export async function readFleetStatus(url: string, prefix?: string): Promise<InstanceStatus[]> {
  let lastError = '';
  const redis = createRedisClient(url, (m) => (lastError = m), { reconnect: false });
  try {
    try {
      await redis.connect();
    } catch (err) {
      throw new Error(
        lastError ||
          `coordinator Redis ${redactRedisUrl(url)}: ${(err as Error).message.split(url).join(redactRedisUrl(url))}`,
      );
    }
    return await liveInstances(redis, fleetKeys(prefix));
  } finally {
    redis.disconnect();
  }
}
