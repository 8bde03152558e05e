/**
 * @keel/queue: a persistent operation queue on SQLite or PostgreSQL, with group commit, leases and
 * attempt tokens, retries through keel's backoff and retry budget, dead letters, partition order,
 * retention, reconnection and optional AES-256-GCM encryption of payloads at rest.
 * @packageDocumentation
 */
export {
  Queue,
  openQueue,
  type QueueOptions,
  type QueueStats,
  type QueueItem,
  type DeadLetter,
  type QueueHealthCheck,
  DEFAULT_DEPTH_THRESHOLD,
} from './queue.js';
export type { MetricsHelpers, CounterLike, GaugeLike } from './metrics.js';
export type { Outcome } from './outcomes.js';
export type { EnqueueOptions, Enqueued } from './enqueue.js';
export type { QueueJob, ProcessOptions } from './worker.js';
export type { RetentionOptions } from './retention.js';
export {
  payloadCipher,
  isEncryptedPayload,
  type EncryptionOptions,
  type PayloadCipher,
} from './encryption.js';
export type {
  QueueItemState,
  StoreAccess,
  StartupRetryOptions,
  StartupHealth,
  OpenAttempt,
} from '@keel/store';
export {
  createOutageQueue,
  isUnavailable,
  OutageQueue,
  type OutageQueueOptions,
  type OutageQueueStats,
  type ReplayJob,
  type ReplayQueue,
  type RunOrQueueOptions,
  type RunOutcome,
} from './run-or-queue.js';
