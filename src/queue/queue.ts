import { classify, keelError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/index.js';
import {
  SqliteQueueStore,
  type NewQueueRow,
  type QueueRow,
  type SqliteQueueStoreOptions,
} from '../store/index.js';

/** Options of {@link Queue.enqueue}. */
export interface EnqueueOptions {
  /** A second enqueue with the same key returns the first item. */
  idempotencyKey?: string;
  /** Items with the same key are processed in order, one at a time. */
  partitionKey?: string;
  /** Higher runs first (default 0). */
  priority?: number;
  /** Earliest start, in ms from now (default 0). */
  delayMs?: number;
  /** Attempts before the item becomes a dead letter (default 5). */
  maxAttempts?: number;
}

/** What {@link Queue.enqueue} resolves with once the item is durable. */
export interface Enqueued {
  id: number;
  /** True when an item with the same idempotency key already existed. */
  duplicate: boolean;
}

/** A claimed item as a handler sees it. */
export interface QueueJob<T> {
  id: number;
  payload: T;
  attempt: number;
  partitionKey: string | null;
  signal: AbortSignal;
}

/** Options of {@link Queue.process}. */
export interface ProcessOptions {
  /** Items handled at once (default 1). */
  concurrency?: number;
  /** Lease length, renewed by heartbeats every third of it (default 30 000). */
  leaseMs?: number;
  /** Wait between empty polls, in ms (default 50). */
  pollMs?: number;
  /** Delay before retry `attempt` (default: 100 ms doubling, at most 30 s). */
  backoffMs?: (attempt: number) => number;
}

/** Options of {@link openQueue}. */
export interface QueueOptions extends SqliteQueueStoreOptions {
  /** Queue name inside the store (default 'default'). */
  name?: string;
  clock?: Clock;
}

/** A snapshot for metrics and health. */
export interface QueueStats {
  pending: number;
  active: number;
  completed: number;
  dead: number;
  oldestPendingAgeMs: number | null;
  completedTotal: number;
  failedTotal: number;
}

/** A dead letter with its error history. */
export interface DeadLetter<T> {
  id: number;
  payload: T;
  attempts: number;
  errors: unknown[];
}

interface Pending {
  row: NewQueueRow;
  resolve: (e: Enqueued) => void;
  reject: (err: unknown) => void;
}

/**
 * A persistent operation queue on SQLite. Enqueues issued in the same tick are committed in one
 * transaction (one fsync); `enqueue` resolves only after that commit.
 */
export class Queue<T = unknown> {
  private batch: Pending[] = [];
  private flushScheduled = false;
  private running = false;
  private paused = false;
  private loop: Promise<void> | undefined;
  private readonly inFlight = new Map<number, { token: string; abort: AbortController }>();
  private completedTotal = 0;
  private failedTotal = 0;
  private wake: (() => void) | undefined;

  constructor(
    private readonly store: SqliteQueueStore,
    private readonly name: string,
    private readonly clock: Clock,
  ) {}

  /** Stores `payload`; resolves once it is durable. Throws QUEUE_CLOSED after close(). */
  enqueue(payload: T, options: EnqueueOptions = {}): Promise<Enqueued> {
    if (this.closed)
      return Promise.reject(keelError('QUEUE_CLOSED', `queue "${this.name}" is closed; enqueue refused`));
    return new Promise<Enqueued>((resolve, reject) => {
      this.batch.push({
        row: {
          payload: JSON.stringify(payload),
          partitionKey: options.partitionKey,
          idempotencyKey: options.idempotencyKey,
          priority: options.priority ?? 0,
          maxAttempts: options.maxAttempts ?? 5,
          runAt: this.clock.now() + (options.delayMs ?? 0),
        },
        resolve,
        reject,
      });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => {
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    try {
      const ids = this.store.insertMany(
        this.name,
        batch.map((p) => p.row),
        this.clock.now(),
      );
      batch.forEach((p, i) => {
        p.resolve(ids[i] ?? { id: -1, duplicate: false });
      });
      this.wake?.();
    } catch (err) {
      const error = keelError(
        'QUEUE_ENQUEUE_FAILED',
        `could not store ${String(batch.length)} item(s) in queue "${this.name}"`,
        {},
        {
          cause: err,
          retryable: true,
          kind: 'transient',
        },
      );
      for (const p of batch) p.reject(error);
    }
  }

  private closed = false;

  /** Starts workers running `handler`. A rejection is retried with backoff, then dead-lettered. */
  process(handler: (job: QueueJob<T>) => Promise<void>, options: ProcessOptions = {}): void {
    if (this.running) throw keelError('INVALID_CONFIG', `queue "${this.name}" is already processing`);
    this.running = true;
    const concurrency = Math.max(1, options.concurrency ?? 1);
    const leaseMs = options.leaseMs ?? 30_000;
    const pollMs = options.pollMs ?? 50;
    const backoff = options.backoffMs ?? ((a: number) => Math.min(30_000, 100 * 2 ** (a - 1)));
    const heartbeat = setInterval(
      () => {
        for (const [id, f] of this.inFlight) {
          if (!this.store.heartbeat(id, f.token, this.clock.now() + leaseMs))
            f.abort.abort(keelError('STALE_TOKEN', `lease of item ${String(id)} was lost`));
        }
      },
      Math.max(10, leaseMs / 3),
    );
    heartbeat.unref();
    const run = async (row: QueueRow): Promise<void> => {
      const token = row.token ?? '';
      const abort = new AbortController();
      this.inFlight.set(row.id, { token, abort });
      try {
        await handler({
          id: row.id,
          payload: JSON.parse(row.payload) as T,
          attempt: row.attempts,
          partitionKey: row.partitionKey,
          signal: abort.signal,
        });
        if (!this.closed || this.inFlight.has(row.id)) {
          if (this.store.complete(row.id, token, this.clock.now())) this.completedTotal++;
        }
      } catch (err) {
        this.failedTotal++;
        const e = classify(err);
        const dead = row.attempts >= row.maxAttempts || (!e.retryable && e.code !== 'UNKNOWN');
        const now = this.clock.now();
        try {
          this.store.fail(
            row.id,
            token,
            { code: e.code, message: e.message, attempt: row.attempts, at: now },
            dead ? null : now + backoff(row.attempts),
            now,
          );
        } catch {
          // The store closed under a handler that outlived close(): its lease expires and the item is reclaimed.
        }
      } finally {
        this.inFlight.delete(row.id);
        this.wake?.();
      }
    };
    this.loop = (async () => {
      while (this.running) {
        const free = concurrency - this.inFlight.size;
        let claimed: QueueRow[] = [];
        if (!this.paused && free > 0) {
          try {
            claimed = this.store.claim(this.name, free, leaseMs, this.clock.now());
          } catch {
            claimed = [];
          }
        }
        for (const row of claimed) void run(row);
        if (claimed.length === 0 || this.inFlight.size >= concurrency) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, pollMs);
            this.wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
          this.wake = undefined;
        }
      }
      clearInterval(heartbeat);
    })();
  }

  /** Stops claiming new items; those in flight finish. */
  pause(): void {
    this.paused = true;
  }

  /** Claims again after {@link pause}. */
  resume(): void {
    this.paused = false;
    this.wake?.();
  }

  /** Dead letters with their error history, oldest first. */
  deadLetters(limit = 100): DeadLetter<T>[] {
    return this.store.list(this.name, 'dead', limit).map((r) => ({
      id: r.id,
      payload: JSON.parse(r.payload) as T,
      attempts: r.attempts,
      errors: JSON.parse(r.errors) as unknown[],
    }));
  }

  /** Sends dead letters (all, or `ids`) back to the queue; returns how many. */
  redrive(ids?: readonly number[]): number {
    const n = this.store.redrive(this.name, this.clock.now(), ids);
    this.wake?.();
    return n;
  }

  /** Removes completed items older than `completedMaxAgeMs` (default 1 day) and dead letters older than `deadMaxAgeMs` (default 7 days). */
  purge(completedMaxAgeMs = 86_400_000, deadMaxAgeMs = 7 * 86_400_000): number {
    const now = this.clock.now();
    return this.store.purge(this.name, now - completedMaxAgeMs, now - deadMaxAgeMs);
  }

  /** Depth, oldest age, throughput counters and dead letters. */
  stats(): QueueStats {
    const c = this.store.counts(this.name);
    return {
      pending: c.pending,
      active: c.active,
      completed: c.completed,
      dead: c.dead,
      oldestPendingAgeMs: c.oldestPendingAt === null ? null : this.clock.now() - c.oldestPendingAt,
      completedTotal: this.completedTotal,
      failedTotal: this.failedTotal,
    };
  }

  /** Stops workers, waits for handlers in flight (up to `timeoutMs`, default 10 s), releases the rest and closes the store. */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flush();
    this.running = false;
    this.wake?.();
    await this.loop;
    const deadline = Date.now() + timeoutMs;
    while (this.inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const [id, f] of [...this.inFlight]) {
      this.inFlight.delete(id);
      f.abort.abort(keelError('ABORTED', 'queue closing'));
      this.store.release(id, f.token);
    }
    this.store.close();
  }

  /** @internal for tests: the underlying store. */
  get rawStore(): SqliteQueueStore {
    return this.store;
  }
}

/** Opens (creating if needed) a queue in the SQLite file `path`. */
export function openQueue<T = unknown>(path: string, options: QueueOptions = {}): Queue<T> {
  const { name = 'default', clock = systemClock, ...storeOptions } = options;
  return new Queue<T>(new SqliteQueueStore(path, storeOptions), name, clock);
}
