import { keelError, withCorrelation } from 'keel';
import type { Backoff, RetryBudgetPolicy, Clock } from 'keel';
import type { QueueRow, QueueStore } from '@keel/store';
import { CompletionCommitter } from './completions.js';
import { Leases, type InFlight } from './leases.js';
import { DEFAULT_RETRY, OutcomeWriter, type Outcome } from './outcomes.js';
import type { PayloadCodec } from './payload.js';
import type { StoreHealth } from './store-health.js';

/** A claimed item as a handler sees it. */
export interface QueueJob<T> {
  id: number;
  payload: T;
  attempt: number;
  partitionKey: string | null;
  /** Aborts when the lease is lost (`STALE_TOKEN`) or the queue closes before the handler ends. */
  signal: AbortSignal;
  /**
   * The correlation id of the request that enqueued the item (also `correlationId()` inside the
   * handler, so its logs and errors carry it), or undefined.
   */
  correlationId: string | undefined;
}

/** Options of {@link Queue.process}. */
export interface ProcessOptions {
  /** Items handled at once (default 1). */
  concurrency?: number;
  /**
   * Items claimed ahead of free handlers, so a claim and its commit serve many items (default
   * four times `concurrency`, at least 16: a waiting item waits for about four handler runs at most).
   * Each holds a lease renewed by heartbeats while it waits. Use 0 when handlers are slow and
   * several workers share the queue, so waiting items are not held by a busy worker.
   */
  prefetch?: number;
  /** Lease length, renewed by heartbeats every third of it (default 30 000). */
  leaseMs?: number;
  /** Wait between empty polls, in ms (default 50); an enqueue in this process wakes workers at once. */
  pollMs?: number;
  /** Delays between attempts of a failing item (default: exponential, 100 ms doubling, at most 30 s, full jitter). */
  backoff?: Backoff;
  /**
   * A retry budget shared with other retries: when it is spent, a failed item is rescheduled
   * after `maxDelayMs` instead of its backoff delay, so a failing dependency is not hammered.
   */
  budget?: RetryBudgetPolicy;
  /** Delay used when the budget is spent (default 30 000). */
  maxDelayMs?: number;
  /** Waits between polls while the store is unavailable (default: exponential 50 ms to 5 s, equal jitter). */
  reconnectBackoff?: Backoff;
}

/**
 * The handler type, taken from a method signature so that its parameter is checked bivariantly:
 * a `Queue<T>` stays assignable to `Queue<unknown>` although the loop keeps the handler in a field.
 */
type Handler<T> = { handle(job: QueueJob<T>): Promise<void> }['handle'];

/**
 * The worker side of a queue: claims items ahead of free handlers (prefetch), runs the handler,
 * renews leases by heartbeats, and writes outcomes in the background (completions group-committed,
 * failures rescheduled or dead-lettered). Claims run while handlers take items from the buffer (a
 * pipeline), so a claim's round trip and commit are not paid between items.
 */
export class WorkerLoop<T> {
  private running = false;
  private paused = false;
  private looping: Promise<void> | undefined;
  private readonly leases: Leases;
  private wake: (() => void) | undefined;
  private readonly completions: CompletionCommitter;
  private readonly outcomes: OutcomeWriter;
  /** No claim before this (Date.now() ms): after an empty claim, or backing off from a store error. */
  private claimNotBefore = 0;

  // Set by start().
  private handler: Handler<T> = () => Promise.resolve();
  private concurrency = 1;
  private prefetch = 0;
  private leaseMs = 0;
  private pollMs = 0;

  /** Claimed items waiting for a free handler (their leases are renewed with the others). */
  private readonly buffer: { row: QueueRow; entry: InFlight }[] = [];
  private handling = 0;
  /** The reconnect backoff as far as failed claims have walked it. */
  private claimBackoff: Backoff = DEFAULT_RETRY.reconnect;
  private claiming: Promise<void> | undefined;
  private refillScheduled = false;

  constructor(
    private readonly store: QueueStore,
    private readonly name: string,
    private readonly clock: Clock,
    private readonly codec: PayloadCodec<T>,
    private readonly health: StoreHealth,
  ) {
    this.leases = new Leases(store, name, clock);
    this.completions = new CompletionCommitter(store, name, clock, () => this.running);
    this.outcomes = new OutcomeWriter(store, clock, health, this.completions);
  }

  /** Counters of this instance since it opened, for `Queue.stats`. */
  get totals(): Readonly<OutcomeWriter['totals']> {
    return this.outcomes.totals;
  }

  /** Tells `listener` of every counted outcome (metrics). */
  onOutcome(listener: (outcome: Outcome) => void): void {
    this.outcomes.onOutcome = listener;
  }

  /** True from {@link start} until {@link stop}. */
  get started(): boolean {
    return this.running;
  }

  /**
   * Starts the loop with `handler`; see `Queue.process`.
   * @throws KeelError `INVALID_CONFIG` when `leaseMs` is not > 0.
   */
  start(handler: Handler<T>, options: ProcessOptions): void {
    this.running = true;
    this.handler = handler;
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1));
    this.prefetch = Math.max(0, Math.floor(options.prefetch ?? Math.max(16, 4 * this.concurrency)));
    const leaseMs = options.leaseMs ?? 30_000;
    this.pollMs = options.pollMs ?? 50;
    if (!(leaseMs > 0))
      throw keelError('INVALID_CONFIG', `process option leaseMs must be > 0, got ${String(leaseMs)}`);
    this.leaseMs = leaseMs;
    this.outcomes.settings = {
      backoff: options.backoff ?? DEFAULT_RETRY.backoff,
      budget: options.budget,
      maxDelayMs: options.maxDelayMs ?? DEFAULT_RETRY.maxDelayMs,
      reconnect: options.reconnectBackoff ?? DEFAULT_RETRY.reconnect,
    };
    this.leases.startHeartbeat(leaseMs);
    this.claimBackoff = this.outcomes.settings.reconnect;
    this.looping = this.work();
  }

  /** Stops claiming in this instance; handlers in flight finish. */
  pause(): void {
    this.paused = true;
  }

  /** Claims again after {@link pause}. */
  resume(): void {
    this.paused = false;
    this.kick();
  }

  /** Lets the loop claim at once (something was enqueued, redriven or moved) and wakes it. */
  kick(): void {
    this.claimNotBefore = 0;
    this.wake?.();
  }

  /**
   * Stops claiming and heartbeats; writes of outcomes keep retrying an unavailable store until
   * `deadline` (Date.now() ms). See {@link stopped} and {@link release}.
   */
  stop(deadline: number): void {
    this.outcomes.closeDeadline = deadline;
    this.running = false;
    this.leases.stopHeartbeat();
    this.wake?.();
  }

  /** Resolves when the loop has ended after {@link stop} (handlers may still run). */
  async stopped(): Promise<void> {
    await this.looping;
  }

  /**
   * Waits for handlers in flight (up to `timeoutMs`), then aborts and releases what did not
   * finish, without counting the attempt.
   */
  release(timeoutMs: number): Promise<void> {
    return this.leases.release(timeoutMs);
  }

  private async work(): Promise<void> {
    const buffer = this.buffer;
    while (this.running) {
      if (this.paused && buffer.length > 0) {
        // Paused: give the items not started back, so other workers can take them.
        for (const b of buffer.splice(0)) {
          this.leases.drop(b.row.id);
          await this.store.release(b.entry.ref).catch(() => undefined);
        }
      }
      while (this.handling < this.concurrency && buffer.length > 0) {
        const b = buffer.shift();
        if (b) this.begin(b.row, b.entry);
      }
      const waitMs = this.claimNotBefore - Date.now();
      // Refill in batches when half the prefetch is used. The claim is sized on the next turn of
      // the event loop, once handlers that finish at once have finished, so it claims a batch
      // rather than one item per finished handler; meanwhile handlers keep taking buffered items.
      if (
        !this.claiming &&
        !this.refillScheduled &&
        !this.paused &&
        buffer.length <= this.prefetch / 2 &&
        waitMs <= 0
      ) {
        this.refillScheduled = true;
        setImmediate(() => {
          this.refillScheduled = false;
          const capacity = this.concurrency + this.prefetch - this.handling - buffer.length;
          if (!this.running || this.paused || this.claiming || capacity <= 0) return;
          this.claiming = this.refill(capacity).finally(() => {
            this.claiming = undefined;
          });
        });
      }
      await this.idle(this.claiming || this.refillScheduled || waitMs <= 0 ? this.pollMs : waitMs);
    }
    await this.claiming;
  }

  /** Waits `ms` or until woken (by an enqueue, a finished handler, resume or close). */
  private idle(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = () => {
        this.wake = undefined;
        done();
      };
    });
  }

  /** Claims up to `capacity` items into the buffer; on a store error, backs off further claims. */
  private refill(capacity: number): Promise<void> {
    return this.completions.claim(capacity, this.leaseMs).then(
      async (claimed) => {
        this.health.observe();
        this.claimBackoff = this.outcomes.settings.reconnect;
        if (claimed.length === 0) this.claimNotBefore = Date.now() + this.pollMs;
        for (const row of claimed) {
          const ref = { id: row.id, token: row.token ?? '' };
          if (!this.running) {
            // Closed while claiming: give it back at once.
            await this.store.release(ref).catch(() => undefined);
            continue;
          }
          this.buffer.push({ row, entry: this.leases.hold(ref) });
        }
        if (claimed.length > 0) this.wake?.();
      },
      (err: unknown) => {
        this.health.observe(err);
        // Store unavailable (or failing): back off; claims resume by themselves when it answers.
        const step = this.claimBackoff.next();
        this.claimBackoff = step.next;
        this.claimNotBefore = Date.now() + step.delayMs;
      },
    );
  }

  private begin(row: QueueRow, entry: InFlight): void {
    this.handling++;
    entry.done = this.run(row, entry).finally(() => {
      this.leases.drop(row.id);
      this.wake?.();
    });
  }

  private async run(row: QueueRow, entry: InFlight): Promise<void> {
    const handler = this.handler;
    let outcome: { ok: true } | { ok: false; error: unknown };
    try {
      const payload = this.codec.decode(row.payload);
      this.outcomes.started(row);
      const job: QueueJob<T> = {
        id: row.id,
        payload,
        attempt: row.attempts,
        partitionKey: row.partitionKey,
        signal: entry.abort.signal,
        correlationId: row.correlationId ?? undefined,
      };
      const cid = row.correlationId;
      await (cid === null ? handler(job) : withCorrelation(cid, () => handler(job)));
      outcome = { ok: true };
    } catch (err) {
      outcome = { ok: false, error: err };
    }
    // The handler slot is free now; the outcome is written in the background (and batched), so
    // the next item starts without waiting for this one's commit.
    this.handling--;
    this.wake?.();
    if (entry.released) return;
    if (outcome.ok) await this.outcomes.succeeded(row, entry.ref);
    else await this.outcomes.failed(row, entry.ref, outcome.error);
  }
}
