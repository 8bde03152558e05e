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
