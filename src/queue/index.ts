/**
 * keel/queue: a persistent operation queue with leases, attempt tokens, retries, dead letters
 * and group commit, on SQLite.
 * @packageDocumentation
 */
export {
  Queue,
  openQueue,
  type EnqueueOptions,
  type Enqueued,
  type QueueJob,
  type ProcessOptions,
  type QueueOptions,
  type QueueStats,
  type DeadLetter,
} from './queue.js';
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
