import type { ObjectIdentity } from 'keel/cache';
import type { SharedBreakerState } from './coordinator.js';

/* Messages of the one-host coordination between the workers and their primary (node:cluster IPC). */

/** Worker → primary. */
export type CoordRequest =
  | { keel: 'lease'; req: number; key: string }
  | { keel: 'lease-done'; key: string; ok: boolean }
  | { keel: 'invalidate'; req: number; id: ObjectIdentity }
  | { keel: 'invalidated'; req: number }
  | { keel: 'breaker'; name: string; state: SharedBreakerState }
  | { keel: 'budget'; name: string; tokens: number };

/** Primary → worker. */
export type CoordReply =
  | { keel: 'lease-reply'; req: number; role: 'leader' | 'follower' }
  | { keel: 'lease-settled'; key: string; ok: boolean }
  | { keel: 'invalidate-reply'; req: number }
  | { keel: 'invalidate'; req: number; id: ObjectIdentity }
  | { keel: 'breaker'; name: string; state: SharedBreakerState }
  | { keel: 'budget'; name: string; tokens: number };

/** Longest lease key accepted (a fill key is a 64-digit hash, an ETag and an index). */
export const MAX_LEASE_KEY_LENGTH = 1024;
