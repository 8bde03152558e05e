export type { Coordinator, Lease, ObjectRef, SharedBreakerState } from './coordinator.js';
export {
  RedisCoordinator,
  MAX_FOLLOWED_LEASES,
  MAX_LEASE_KEY_LENGTH,
  MAX_PENDING_INVALIDATIONS,
  type CoordinatorAvailability,
  type RedisCoordinatorOptions,
} from './redis-coordinator.js';
export { readFleetStatus } from './fleet-status.js';
export { MAX_INSTANCES, type InstanceStatus } from './instances.js';
export { fleetKeys, MAX_PREFIX_LENGTH, type FleetKeys } from './keys.js';
export { parseRedisUrl, redactRedisUrl } from './redis-url.js';
export type { RedisClientOptions } from './redis-client.js';
