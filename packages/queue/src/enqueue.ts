import { classify, correlationId, keelError } from 'keel';
import type { Clock } from 'keel';
import type { NewQueueRow, QueueStore } from '@keel/store';
import type { PayloadCodec } from './payload.js';
import { OutageSpool } from './spool.js';
import { isStoreUnavailable, type StoreHealth } from './store-health.js';

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
  /**
   * True when PostgreSQL was unreachable and the item was committed to the local `spool` instead
   * (its `id` is then the spool's); it moves to PostgreSQL by itself when the server answers.
   */
  spooled?: boolean;
}

interface PendingEnqueue {
  row: NewQueueRow;
  resolve: (e: Enqueued) => void;
  reject: (err: unknown) => void;
}

function checkInt(name: string, value: number | undefined, min: number): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value >= min))
    throw keelError(
      'INVALID_INPUT',
      `enqueue option ${name} must be an integer >= ${String(min)}, got ${String(value)}`,
    );
}

/**
 * The enqueue side of a queue: enqueues issued while a commit is running are committed together
 * in the next one (group commit), and each resolves only after its commit. With an outage spool,
 * batches go to the spool while PostgreSQL is unreachable or the spool still holds items.
 */
export class EnqueueCommitter<T> {
  private batch: PendingEnqueue[] = [];
  private flushScheduled = false;
  private flushing: Promise<void> | undefined;
  private spoolFile: OutageSpool | undefined;

  constructor(
    private readonly store: QueueStore,
    private readonly name: string,
    private readonly clock: Clock,
    private readonly codec: PayloadCodec<T>,
    private readonly health: StoreHealth,
    /** Called after each commit, so workers claim what it added at once. */
    private readonly onCommitted: () => void,
  ) {}

  /** The outage spool, once attached. */
  get spool(): OutageSpool | undefined {
    return this.spoolFile;
  }

  /** Sends later batches through `spool` while the store is unreachable. */
  attachSpool(spool: OutageSpool): void {
    this.spoolFile = spool;
  }

  /** Validates and encodes an item and queues it for the next commit; see `Queue.enqueue`. */
  enqueue(payload: T, options: EnqueueOptions): Promise<Enqueued> {
    let row: NewQueueRow;
    try {
      checkInt('priority', options.priority, Number.MIN_SAFE_INTEGER);
      checkInt('delayMs', options.delayMs, 0);
      checkInt('maxAttempts', options.maxAttempts, 1);
      row = {
        payload: this.codec.encode(payload),
        // The request that enqueues the item: the handler runs under its id, after a crash too.
        correlationId: correlationId(),
        partitionKey: options.partitionKey,
        idempotencyKey: options.idempotencyKey,
        priority: options.priority ?? 0,
        maxAttempts: options.maxAttempts ?? 5,
        runAt: this.clock.now() + (options.delayMs ?? 0),
      };
      if (this.spoolFile) row = OutageSpool.keyed(row);
    } catch (err) {
      return Promise.reject(classify(err));
    }
    return new Promise<Enqueued>((resolve, reject) => {
      this.batch.push({ row, resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Resolves once every enqueue issued so far is committed (or refused). */
  async drain(): Promise<void> {
    while (this.flushing || this.flushScheduled || this.batch.length > 0) {
      if (this.flushing) await this.flushing;
      else await new Promise((r) => setImmediate(r));
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.flushing) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushing = this.flush().finally(() => {
        this.flushing = undefined;
        if (this.batch.length > 0) this.scheduleFlush();
      });
    });
  }

  /** Commits everything enqueued so far in one transaction. */
  private async flush(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    const rows = batch.map((p) => p.row);
    try {
      let ids: Enqueued[];
      const spool = this.spoolFile;
      if (spool?.holding) ids = await toSpool(spool, rows);
      else {
        try {
          ids = await this.store.enqueue(this.name, rows, this.clock.now());
          this.health.observe();
        } catch (err) {
          this.health.observe(err);
          if (!spool || !isStoreUnavailable(err)) throw err;
          ids = await toSpool(spool, rows);
        }
      }
      batch.forEach((p, i) => {
        p.resolve(ids[i] ?? { id: -1, duplicate: false });
      });
      this.onCommitted();
    } catch (err) {
      const error = isStoreUnavailable(err)
        ? err
        : keelError(
            'QUEUE_ENQUEUE_FAILED',
            `could not store ${String(batch.length)} item(s) in queue "${this.name}" at ${this.store.location}`,
            {},
            { cause: err, retryable: true, kind: 'transient' },
          );
      for (const p of batch) p.reject(error);
    }
  }
}

/** Writes `rows` to the outage spool; their ids say they are spooled. */
async function toSpool(spool: OutageSpool, rows: NewQueueRow[]): Promise<Enqueued[]> {
  return (await spool.write(rows)).map((r) => ({ ...r, spooled: true }));
}
