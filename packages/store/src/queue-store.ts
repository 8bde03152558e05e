/** The state of a queue item. */
export type QueueItemState = 'pending' | 'active' | 'completed' | 'dead';

/** The states an item can be in, for validating input such as `keel queue list --state`. */
export const QUEUE_ITEM_STATES: readonly QueueItemState[] = ['pending', 'active', 'completed', 'dead'];

/** A queue item as stored. `payload` is the stored text (JSON, or an encrypted envelope). */
export interface QueueRow {
  id: number;
  queue: string;
  payload: string;
  status: QueueItemState;
  partitionKey: string | null;
  idempotencyKey: string | null;
  priority: number;
  attempts: number;
  maxAttempts: number;
  runAt: number;
  leaseUntil: number | null;
  token: string | null;
  /** The error history as JSON text (an array). */
  errors: string;
  createdAt: number;
  finishedAt: number | null;
  /** The correlation id of the request that enqueued it, or null. */
  correlationId: string | null;
}

/** A new item for {@link QueueStore.enqueue}. */
export interface NewQueueRow {
  payload: string;
  correlationId?: string | undefined;
  partitionKey?: string | undefined;
  idempotencyKey?: string | undefined;
  priority: number;
  maxAttempts: number;
  runAt: number;
}

/** What an enqueue stored: the item's id, and whether its idempotency key already existed. */
export interface EnqueueResult {
  id: number;
  duplicate: boolean;
}

/** A claimed item's identity: its id and the attempt token of the claim. */
export interface ClaimRef {
  id: number;
  token: string;
}

/** Counts per state and the oldest pending item's creation time. */
export interface QueueCounts {
  pending: number;
  active: number;
  completed: number;
  dead: number;
  oldestPendingAt: number | null;
  paused: boolean;
}

/**
 * Durable storage of a queue, implemented on SQLite and on PostgreSQL with the same behaviour
 * (test/queue-behaviour.test.ts runs against both). Times are milliseconds from the caller's clock.
 * Methods that take a token refuse (return false) when it is not the item's current attempt token.
 * On PostgreSQL, a lost connection rejects with KeelError `QUEUE_STORE_UNAVAILABLE` (retryable).
 */
export interface QueueStore {
  readonly kind: 'sqlite' | 'postgres';
  /** Where the store is, safe to print (no password). */
  readonly location: string;
  /**
   * Inserts items in one transaction (group commit); an existing idempotency key (also one earlier in
   * the same batch) returns the first item's id with `duplicate: true`. Results are in input order.
   */
  enqueue(queue: string, items: readonly NewQueueRow[], now: number): Promise<EnqueueResult[]>;
  /**
   * Claims up to `limit` due items (highest priority first, then oldest) with a lease until
   * `now + leaseMs`, a fresh attempt token and one more attempt. Expired leases are reclaimed first.
   * An item whose partition has an active or older pending item is skipped, so a partition runs
   * one item at a time, in order. Claims nothing while the queue is paused.
   */
  claim(queue: string, limit: number, leaseMs: number, now: number): Promise<QueueRow[]>;
  /**
   * Optional: {@link complete} then {@link claim} in one transaction (one commit). Stores where a
   * commit is the main cost (SQLite with synchronous=FULL) provide it; workers use it when present.
   */
  completeAndClaim?(
    done: readonly ClaimRef[],
    queue: string,
    limit: number,
    leaseMs: number,
    now: number,
  ): Promise<{ completed: Set<number>; claimed: QueueRow[] }>;
  /** Extends the leases of `items` to `leaseUntil`; resolves with the ids whose token was still current. */
  heartbeat(items: readonly ClaimRef[], leaseUntil: number): Promise<Set<number>>;
  /** Marks items completed; resolves with the ids whose token was current (the others are refused). */
  complete(items: readonly ClaimRef[], now: number): Promise<Set<number>>;
  /** Records a failure: back to pending at `runAt`, or dead when `runAt` is null. False when stale. */
  fail(item: ClaimRef, error: unknown, runAt: number | null, now: number): Promise<boolean>;
  /** Gives a claimed item back without counting the attempt (graceful close). False when stale. */
  release(item: ClaimRef): Promise<boolean>;
  /** Items in one state, oldest first. */
  list(queue: string, state: QueueItemState, limit: number): Promise<QueueRow[]>;
  /** Sends dead letters (all, or `ids`) back to pending with fresh attempts; resolves with how many. */
  redrive(queue: string, now: number, ids?: readonly number[]): Promise<number>;
  /** Stops (true) or restarts (false) claiming from `queue` for every worker on this store. */
  setPaused(queue: string, paused: boolean): Promise<void>;
  /**
   * Deletes completed items finished before `completedBefore` and dead letters before `deadBefore`.
   * Resolves with how many, or null when another instance is doing it right now (PostgreSQL
   * advisory lock), so only one instance sweeps at a time.
   */
  sweep(queue: string, completedBefore: number, deadBefore: number): Promise<number | null>;
  /** Counts per state, the oldest pending item and whether the queue is paused. */
  counts(queue: string): Promise<QueueCounts>;
  /** The names of the queues that have items or a paused flag in this store. */
  queues(): Promise<string[]>;
  close(): Promise<void>;
}

/** Maps a database row (snake_case columns, numbers possibly as strings) to a {@link QueueRow}. */
export function toQueueRow(r: Record<string, unknown>): QueueRow {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  return {
    id: Number(r.id),
    queue: String(r.queue),
    payload: String(r.payload),
    status: r.status as QueueItemState,
    partitionKey: (r.partition_key as string | null) ?? null,
    idempotencyKey: (r.idempotency_key as string | null) ?? null,
    priority: Number(r.priority),
    attempts: Number(r.attempts),
    maxAttempts: Number(r.max_attempts),
    runAt: Number(r.run_at),
    leaseUntil: num(r.lease_until),
    token: (r.token as string | null) ?? null,
    errors: typeof r.errors === 'string' ? r.errors : JSON.stringify(r.errors ?? []),
    createdAt: Number(r.created_at),
    finishedAt: num(r.finished_at),
    correlationId: typeof r.correlation_id === 'string' ? r.correlation_id : null,
  };
}

/** Dedupe helper for group commit: the first index of each idempotency key in a batch. */
export function firstOfKey(items: readonly NewQueueRow[]): number[] {
  const first = new Map<string, number>();
  return items.map((it, i) => {
    if (it.idempotencyKey === undefined) return i;
    const seen = first.get(it.idempotencyKey);
    if (seen !== undefined) return seen;
    first.set(it.idempotencyKey, i);
    return i;
  });
}
