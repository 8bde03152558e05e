import type { Redis } from 'ioredis';
import type { FleetKeys } from './keys.js';

/** What one instance tells the fleet in its heartbeat (shown by `keel fleet status`). */
export interface InstanceStatus {
  /** Unique per process: host, pid and a random suffix. */
  id: string;
  host: string;
  pid: number;
  /** Its S3 port (0 until it listens). */
  port: number;
  /** When it started (ISO 8601). */
  started: string;
  /** Its health: `pass`, `warn` or `fail` (as `/health` says). */
  health: string;
  /** Hits over reads since it started (0 when it served none). */
  hitRatio: number;
  fillsInFlight: number;
  /** Breakers that are not closed: name → state. */
  breakers: Record<string, string>;
  /** When this heartbeat was sent (ISO 8601). */
  at: string;
}

/** Most instances listed; a fleet is a handful of hosts, each with a few workers. */
export const MAX_INSTANCES = 1_000;

/** Writes one heartbeat: the instance's status, kept `ttlMs`, and its id in the fleet's set. */
export async function writeHeartbeat(
  redis: Redis,
  keys: FleetKeys,
  status: InstanceStatus,
  ttlMs: number,
): Promise<void> {
  await redis
    .multi()
    .set(keys.instance(status.id), JSON.stringify(status), 'PX', ttlMs)
    .zadd(keys.instances, Date.now(), status.id)
    .exec();
}

/** Removes an instance's heartbeat (it is shutting down). */
export async function removeHeartbeat(redis: Redis, keys: FleetKeys, id: string): Promise<void> {
  await redis.multi().del(keys.instance(id)).zrem(keys.instances, id).exec();
}

/**
 * The instances whose heartbeat has not expired, oldest first; ids whose heartbeat expired are
 * removed from the set on the way. A heartbeat that is not valid JSON is skipped.
 */
export async function liveInstances(redis: Redis, keys: FleetKeys): Promise<InstanceStatus[]> {
  const ids = await redis.zrange(keys.instances, 0, MAX_INSTANCES - 1);
  if (ids.length === 0) return [];
  const values = await redis.mget(ids.map((id) => keys.instance(id)));
  const gone = ids.filter((_, i) => values[i] === null);
  if (gone.length > 0) await redis.zrem(keys.instances, ...gone);
  const live: InstanceStatus[] = [];
  for (const v of values) {
    if (v === null) continue;
    try {
      live.push(JSON.parse(v) as InstanceStatus);
    } catch {
      // Not ours to repair: it expires with its TTL.
    }
  }
  return live;
}
