/*
 * What the processes serving one cache coordinate, behind one interface (defined in @keel/fleet):
 * the workers of one host through their primary (cluster-coordinator.ts), one process alone
 * (local-coordinator.ts), and several hosts through Redis (@keel/fleet's RedisCoordinator).
 */
export type { Coordinator, Lease, SharedBreakerState } from '@keel/fleet';
