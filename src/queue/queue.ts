import { classify, isKeelError, keelError } from '../errors/index.js';
import { exponential, type Backoff, type RetryBudgetPolicy } from '../policy/index.js';
import { systemClock, type Clock, type TimerHandle } from '../time/index.js';
import {
  openQueueStore,
  type ClaimRef,
  type NewQueueRow,
  type QueueItemState,
  type QueueRow,
  type QueueStore,
  type QueueStoreOptions,
} from '../store/index.js';
import {
  isEncryptedPayload,
  payloadCipher,
  type EncryptionOptions,
  type PayloadCipher,
} from './encryption.js';
import { OutageSpool } from './spool.js';

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

/** A claimed item as a handler sees it. */
export interface QueueJob<T> {
  id: number;
  payload: T;
  attempt: number;
  partitionKey: string | null;
  /** Aborts when the lease is lost (`STALE_TOKEN`) or the queue closes before the handler ends. */
  signal: AbortSignal;
}

/** Options of {@link Queue.process}. */
export interface ProcessOptions {
  /** Items handled at once (default 1). */
  concurrency?: number;
  /**
   * Items claimed ahead of free handlers, so a claim and its commit serve many items (default 16).
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

/** Retention of finished items, swept on an interval by one instance at a time. */
export interface RetentionOptions {
  /** Completed items are deleted this long after they finished (default 1 day). */
  completedMs?: number;
  /** Dead letters are deleted this long after they died (default 14 days). */
  deadMs?: number;
  /** How often to sweep (default 5 minutes). */
  intervalMs?: number;
}

/** Options of {@link openQueue}. */
export interface QueueOptions extends QueueStoreOptions {
  /** Queue name inside the store (default 'default'). */
  name?: string;
  clock?: Clock;
  /** Automatic retention (default on, see {@link RetentionOptions}); `false` turns it off. */
  retention?: RetentionOptions | false;
  /** Encrypt payloads at rest with AES-256-GCM (see `payloadCipher`). */
  encryption?: EncryptionOptions;
  /**
   * PostgreSQL only: a SQLite file that keeps accepting enqueues while PostgreSQL is unreachable
   * (see `Enqueued.spooled`); they are handed to PostgreSQL in order once it answers. Items get a
   * generated idempotency key when they have none, so none is stored twice.
   */
  spool?: string;
}

/** A snapshot for metrics and health. */
export interface QueueStats {
  pending: number;
  active: number;
  completed: number;
  dead: number;
  oldestPendingAgeMs: number | null;
  /** Claiming stopped for every worker ({@link Queue.pauseAll}). */
  paused: boolean;
  /** Handled successfully by this instance since it opened. */
  completedTotal: number;
  /** Handler failures in this instance since it opened (retried or dead-lettered). */
  failedTotal: number;
  /** Items this instance moved to the dead letters. */
  deadLetteredTotal: number;
  /** Completions refused because the lease had been lost to another worker. */
  staleTotal: number;
  /** Items removed by retention sweeps of this instance. */
  sweptTotal: number;
  /** Items waiting in this instance's outage spool (always 0 without `spool`). */
  spooled: number;
}

/** An item as listed by {@link Queue.list}. */
export interface QueueItem<T> {
  id: number;
  state: QueueItemState;
  /** Undefined when the payload is encrypted and no key is configured (`encrypted` is then true). */
  payload: T | undefined;
  encrypted: boolean;
  attempts: number;
  maxAttempts: number;
  priority: number;
  partitionKey: string | null;
  idempotencyKey: string | null;
  runAt: number;
  createdAt: number;
  finishedAt: number | null;
  errors: unknown[];
}

/** A dead letter with its error history. */
export type DeadLetter<T> = QueueItem<T>;

interface PendingEnqueue {
  row: NewQueueRow;
  resolve: (e: Enqueued) => void;
  reject: (err: unknown) => void;
}

interface InFlight {
  ref: ClaimRef;
  abort: AbortController;
  released: boolean;
  done: Promise<void>;
}

const DEFAULT_BACKOFF = exponential({ initialMs: 100, maxMs: 30_000 });
const DEFAULT_RECONNECT = exponential({ initialMs: 50, maxMs: 5000, jitter: 'equal' });

const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    setTimeout(resolve, ms).unref();
  });

/** The delay before attempt `attempt + 1` of a backoff (walks it `attempt` steps). */
function delayAfter(backoff: Backoff, attempt: number): number {
  let b = backoff;
  let delayMs = 0;
  for (let i = 0; i < Math.max(1, attempt); i++) ({ delayMs, next: b } = b.next());
  return delayMs;
}

const isUnavailable = (err: unknown): boolean => isKeelError(err) && err.code === 'QUEUE_STORE_UNAVAILABLE';

function checkInt(name: string, value: number | undefined, min: number): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value >= min))
    throw keelError(
      'INVALID_INPUT',
      `enqueue option ${name} must be an integer >= ${String(min)}, got ${String(value)}`,
    );
}

/**
 * A persistent operation queue on SQLite or PostgreSQL (see {@link openQueue}). Enqueues issued
 * while a commit is running are committed together (group commit); `enqueue` resolves only after
 * its commit. Completions are batched the same way.
 */
export class Queue<T = unknown> {
  private batch: PendingEnqueue[] = [];
  private flushScheduled = false;
  private flushing: Promise<void> | undefined;
  private completions: { ref: ClaimRef; resolve: (done: boolean) => void; reject: (err: unknown) => void }[] =
    [];
  private completionScheduled = false;
  private running = false;
  private paused = false;
  private closed = false;
  private closeDeadline = Number.POSITIVE_INFINITY;
  private loop: Promise<void> | undefined;
  private readonly inFlight = new Map<number, InFlight>();
  private wake: (() => void) | undefined;
  private heartbeatTimer: TimerHandle | undefined;
  private retentionTimer: TimerHandle | undefined;
  private sweeping: Promise<void> | undefined;
  private sweepAgain = false;
  private readonly totals = { completed: 0, failed: 0, dead: 0, stale: 0, swept: 0 };
  private reconnect: Backoff = DEFAULT_RECONNECT;
  private storeError: unknown;
  /** No claim before this (Date.now() ms): after an empty claim, or backing off from a store error. */
  private claimNotBefore = 0;

  /** Notes whether the last store call reached the store (for {@link storeAvailable}). */
  private observe(err?: unknown): void {
    this.storeError = err !== undefined && isUnavailable(err) ? err : undefined;
  }

  /**
   * False while the store (PostgreSQL) is unreachable, as seen by the last call this instance
   * made; workers keep polling with `reconnectBackoff` and this turns true again by itself.
   */
  get storeAvailable(): boolean {
    return this.storeError === undefined;
  }

  /** Use {@link openQueue}. */
  constructor(
    private readonly store: QueueStore,
    readonly name: string,
    private readonly clock: Clock = systemClock,
    private readonly retention?: Required<RetentionOptions>,
    private readonly cipher?: PayloadCipher,
    private spool?: OutageSpool,
  ) {
    if (retention) this.scheduleRetention();
  }

  /** Where the store is (file path, or PostgreSQL URL without credentials). */
  get location(): string {
    return this.store.location;
  }

  /**
   * Stores `payload` (anything JSON can represent); resolves once it is durable.
   * @throws KeelError `QUEUE_CLOSED` after close(), `INVALID_INPUT` for bad options,
   *   `QUEUE_STORE_UNAVAILABLE` (retryable) while a PostgreSQL store is unreachable,
   *   `QUEUE_ENQUEUE_FAILED` when the store refused the batch.
   */
  enqueue(payload: T, options: EnqueueOptions = {}): Promise<Enqueued> {
    if (this.closed)
      return Promise.reject(keelError('QUEUE_CLOSED', `queue "${this.name}" is closed; enqueue refused`));
    let row: NewQueueRow;
    try {
      checkInt('priority', options.priority, Number.MIN_SAFE_INTEGER);
      checkInt('delayMs', options.delayMs, 0);
      checkInt('maxAttempts', options.maxAttempts, 1);
      const json = JSON.stringify(payload) as string | undefined;
      if (json === undefined)
        throw keelError(
          'INVALID_INPUT',
          `enqueue: the payload must be JSON-serialisable, got ${typeof payload}`,
        );
      row = {
        payload: this.cipher ? this.cipher.encrypt(json) : json,
        partitionKey: options.partitionKey,
        idempotencyKey: options.idempotencyKey,
        priority: options.priority ?? 0,
        maxAttempts: options.maxAttempts ?? 5,
        runAt: this.clock.now() + (options.delayMs ?? 0),
      };
      if (this.spool) row = OutageSpool.keyed(row);
    } catch (err) {
      return Promise.reject(classify(err));
    }
    return new Promise<Enqueued>((resolve, reject) => {
      this.batch.push({ row, resolve, reject });
      this.scheduleFlush();
    });
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
      if (this.spool?.holding) ids = await this.toSpool(rows);
      else {
        try {
          ids = await this.store.enqueue(this.name, rows, this.clock.now());
          this.observe();
        } catch (err) {
          this.observe(err);
          if (!this.spool || !isUnavailable(err)) throw err;
          ids = await this.toSpool(rows);
        }
      }
      batch.forEach((p, i) => {
        p.resolve(ids[i] ?? { id: -1, duplicate: false });
      });
      this.kick();
    } catch (err) {
      const error = isUnavailable(err)
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

  private async toSpool(rows: NewQueueRow[]): Promise<Enqueued[]> {
    const spool = this.spool;
    if (!spool) return [];
    return (await spool.write(rows)).map((r) => ({ ...r, spooled: true }));
  }

  /** @internal openQueue attaches the spool once the queue exists (its mover wakes the workers). */
  attachSpool(spool: OutageSpool): void {
    this.spool = spool;
  }

  /**
   * Starts workers running `handler`. A rejection is retried after the backoff (or `maxDelayMs`
   * when the retry budget is spent), then dead-lettered; a non-retryable KeelError is dead-lettered
   * at once. While the store is unavailable, workers keep polling with `reconnectBackoff` and
   * resume by themselves.
   * @throws KeelError `INVALID_CONFIG` when already processing.
   */
  process(handler: (job: QueueJob<T>) => Promise<void>, options: ProcessOptions = {}): void {
    if (this.running || this.closed)
      throw keelError('INVALID_CONFIG', `queue "${this.name}" is already processing or closed`);
    this.running = true;
    const concurrency = Math.max(1, Math.floor(options.concurrency ?? 1));
    const prefetch = Math.max(0, Math.floor(options.prefetch ?? 16));
    const leaseMs = options.leaseMs ?? 30_000;
    const pollMs = options.pollMs ?? 50;
    if (!(leaseMs > 0))
      throw keelError('INVALID_CONFIG', `process option leaseMs must be > 0, got ${String(leaseMs)}`);
    const backoff = options.backoff ?? DEFAULT_BACKOFF;
    const retryDelay = (attempt: number): number => delayAfter(backoff, attempt);
    const maxDelayMs = options.maxDelayMs ?? 30_000;
    const budget = options.budget;
    this.reconnect = options.reconnectBackoff ?? DEFAULT_RECONNECT;
    this.startHeartbeat(leaseMs);

    /** Claimed items waiting for a free handler (their leases are renewed with the others). */
    const buffer: { row: QueueRow; entry: InFlight }[] = [];
    let handling = 0;

    const run = async (row: QueueRow, entry: InFlight): Promise<void> => {
      const ref = entry.ref;
      let outcome: { ok: true } | { ok: false; error: unknown };
      try {
        const payload = this.decode(row.payload);
        if (row.attempts === 1) budget?.deposit();
        await handler({
          id: row.id,
          payload,
          attempt: row.attempts,
          partitionKey: row.partitionKey,
          signal: entry.abort.signal,
        });
        outcome = { ok: true };
      } catch (err) {
        outcome = { ok: false, error: err };
      }
      // The handler slot is free now; the outcome is written in the background (and batched), so
      // the next item starts without waiting for this one's commit.
      handling--;
      this.wake?.();
      if (entry.released) return;
      if (outcome.ok) {
        const done = await this.persist(() => this.completeLater(ref));
        if (done === true) {
          this.totals.completed++;
          if (row.attempts > 1) budget?.refund();
        } else if (done === false) this.totals.stale++;
        return;
      }
      this.totals.failed++;
      const e = classify(outcome.error);
      const dead = row.attempts >= row.maxAttempts || (!e.retryable && e.code !== 'UNKNOWN');
      const now = this.clock.now();
      let runAt: number | null = null;
      if (!dead) runAt = now + (budget && !budget.tryWithdraw(e) ? maxDelayMs : retryDelay(row.attempts));
      const failed = await this.persist(() =>
        this.store.fail(
          ref,
          { code: e.code, message: e.message, attempt: row.attempts, at: now },
          runAt,
          now,
        ),
      );
      if (failed === true && dead) this.totals.dead++;
      if (failed === false) this.totals.stale++;
    };

    const start = (row: QueueRow, entry: InFlight): void => {
      handling++;
      entry.done = run(row, entry).finally(() => {
        this.inFlight.delete(row.id);
        this.wake?.();
      });
    };

    let reconnect = this.reconnect;
    let claiming: Promise<void> | undefined;
    let refillScheduled = false;
    // Claims run in the background while handlers take items from the buffer (a pipeline), so a
    // claim's round trip and commit are not paid between items.
    const claim = (capacity: number): Promise<QueueRow[]> => {
      const batch = this.completions;
      if (!this.store.completeAndClaim || batch.length === 0)
        return this.store.claim(this.name, capacity, leaseMs, this.clock.now());
      // Completions waiting for their commit go in the claim's transaction.
      this.completions = [];
      return this.store
        .completeAndClaim(
          batch.map((c) => c.ref),
          this.name,
          capacity,
          leaseMs,
          this.clock.now(),
        )
        .then(
          ({ completed, claimed }) => {
            for (const c of batch) c.resolve(completed.has(c.ref.id));
            return claimed;
          },
          (err: unknown) => {
            for (const c of batch) c.reject(err);
            throw err;
          },
        );
    };
    const refill = (capacity: number): Promise<void> =>
      claim(capacity).then(
        async (claimed) => {
          this.observe();
          reconnect = this.reconnect;
          if (claimed.length === 0) this.claimNotBefore = Date.now() + pollMs;
          for (const row of claimed) {
            const ref = { id: row.id, token: row.token ?? '' };
            if (!this.running) {
              // Closed while claiming: give it back at once.
              await this.store.release(ref).catch(() => undefined);
              continue;
            }
            const entry: InFlight = {
              ref,
              abort: new AbortController(),
              released: false,
              done: Promise.resolve(),
            };
            this.inFlight.set(row.id, entry);
            buffer.push({ row, entry });
          }
          if (claimed.length > 0) this.wake?.();
        },
        (err: unknown) => {
          this.observe(err);
          // Store unavailable (or failing): back off; claims resume by themselves when it answers.
          const step = reconnect.next();
          reconnect = step.next;
          this.claimNotBefore = Date.now() + step.delayMs;
        },
      );

    this.loop = (async () => {
      while (this.running) {
        if (this.paused && buffer.length > 0) {
          // Paused: give the items not started back, so other workers can take them.
          for (const b of buffer.splice(0)) {
            this.inFlight.delete(b.row.id);
            await this.store.release(b.entry.ref).catch(() => undefined);
          }
        }
        while (handling < concurrency && buffer.length > 0) {
          const b = buffer.shift();
          if (b) start(b.row, b.entry);
        }
        const waitMs = this.claimNotBefore - Date.now();
        // Refill in batches when half the prefetch is used. The claim is sized on the next turn of
        // the event loop, once handlers that finish at once have finished, so it claims a batch
        // rather than one item per finished handler; meanwhile handlers keep taking buffered items.
        if (!claiming && !refillScheduled && !this.paused && buffer.length <= prefetch / 2 && waitMs <= 0) {
          refillScheduled = true;
          setImmediate(() => {
            refillScheduled = false;
            const capacity = concurrency + prefetch - handling - buffer.length;
            if (!this.running || this.paused || claiming || capacity <= 0) return;
            claiming = refill(capacity).finally(() => {
              claiming = undefined;
            });
          });
        }
        await this.idle(claiming || refillScheduled || waitMs <= 0 ? pollMs : waitMs);
      }
      await claiming;
    })();
  }

  /** @internal Lets workers claim at once (the spool moved items). */
  wakeWorkers(): void {
    this.kick();
  }

  /** Lets workers claim at once (something was enqueued or redriven) and wakes them. */
  private kick(): void {
    this.claimNotBefore = 0;
    this.wake?.();
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

  /**
   * Runs a store write for a claimed item, retrying while the store is unavailable (until the
   * queue's close deadline). Resolves with the write's answer, or undefined when it gave up: the
   * lease then expires and the item is claimed again.
   */
  private async persist(write: () => Promise<boolean>): Promise<boolean | undefined> {
    let reconnect = this.reconnect;
    for (;;) {
      try {
        const answer = await write();
        this.observe();
        return answer;
      } catch (err) {
        this.observe(err);
        if (!isUnavailable(err) || Date.now() > this.closeDeadline) return undefined;
        const step = reconnect.next();
        reconnect = step.next;
        await sleep(step.delayMs);
      }
    }
  }

  /** Completes `ref` together with the other completions of this tick (one transaction). */
  private completeLater(ref: ClaimRef): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.completions.push({ ref, resolve, reject });
      this.scheduleCompletions();
    });
  }

  /**
   * One completion commit at a time: completions that arrive while one is being committed wait
   * and go together in the next (group commit, as for enqueues).
   */
  private scheduleCompletions(): void {
    if (this.completionScheduled) return;
    this.completionScheduled = true;
    // While workers run on a store that can complete and claim at once, wait one more turn: the
    // worker loop's next claim usually takes these completions into its own commit.
    const later = (fn: () => void): void => {
      if (this.running && this.store.completeAndClaim) setImmediate(() => setImmediate(fn));
      else setImmediate(fn);
    };
    later(() => {
      const batch = this.completions;
      this.completions = [];
      if (batch.length === 0) {
        // A claim took them into its transaction.
        this.completionScheduled = false;
        return;
      }
      this.store
        .complete(
          batch.map((c) => c.ref),
          this.clock.now(),
        )
        .then(
          (done) => {
            for (const c of batch) c.resolve(done.has(c.ref.id));
          },
          (err: unknown) => {
            for (const c of batch) c.reject(err);
          },
        )
        .finally(() => {
          this.completionScheduled = false;
          if (this.completions.length > 0) this.scheduleCompletions();
        });
    });
  }

  private startHeartbeat(leaseMs: number): void {
    const every = Math.max(10, Math.floor(leaseMs / 3));
    const beat = (): void => {
      const entries = [...this.inFlight.values()].filter((f) => !f.released);
      if (entries.length > 0) {
        this.store
          .heartbeat(
            entries.map((f) => f.ref),
            this.clock.now() + leaseMs,
          )
          .then(
            (held) => {
              for (const f of entries)
                if (!held.has(f.ref.id) && this.inFlight.get(f.ref.id) === f)
                  f.abort.abort(
                    keelError(
                      'STALE_TOKEN',
                      `lease of item ${String(f.ref.id)} in queue "${this.name}" was lost`,
                    ),
                  );
            },
            // Store unavailable: the next beat tries again; if the lease runs out meanwhile, the
            // completion is refused and the item is handled again (at least once).
            () => undefined,
          );
      }
      if (this.running) this.heartbeatTimer = this.clock.setTimer(every, beat);
    };
    this.heartbeatTimer = this.clock.setTimer(every, beat);
  }

  /**
   * Sweeps every `retention.intervalMs` of the queue's clock. The next timer is set before the sweep
   * runs; a tick that finds a sweep still running asks for one more after it (never two at once).
   */
  private scheduleRetention(): void {
    const r = this.retention;
    if (!r) return;
    this.retentionTimer = this.clock.setTimer(r.intervalMs, () => {
      if (this.closed) return;
      this.scheduleRetention();
      if (this.sweeping) {
        this.sweepAgain = true;
        return;
      }
      const sweep = async (): Promise<void> => {
        do {
          this.sweepAgain = false;
          // A failed sweep (store unavailable) is simply tried again at the next tick.
          await this.purge(r.completedMs, r.deadMs).catch(() => 0);
        } while (this.sweepAgain && !this.closed);
      };
      this.sweeping = sweep().finally(() => {
        this.sweeping = undefined;
      });
    });
  }

  private decode(stored: string): T {
    if (this.cipher) return JSON.parse(this.cipher.decrypt(stored)) as T;
    if (isEncryptedPayload(stored))
      throw keelError(
        'QUEUE_DECRYPT_FAILED',
        `an item of queue "${this.name}" is encrypted but no encryption.key is configured`,
      );
    return JSON.parse(stored) as T;
  }

  private toItem(r: QueueRow): QueueItem<T> {
    const encrypted = isEncryptedPayload(r.payload);
    return {
      id: r.id,
      state: r.status,
      payload: encrypted && !this.cipher ? undefined : this.decode(r.payload),
      encrypted,
      attempts: r.attempts,
      maxAttempts: r.maxAttempts,
      priority: r.priority,
      partitionKey: r.partitionKey,
      idempotencyKey: r.idempotencyKey,
      runAt: r.runAt,
      createdAt: r.createdAt,
      finishedAt: r.finishedAt,
      errors: JSON.parse(r.errors) as unknown[],
    };
  }

  /** Stops claiming in this instance; handlers in flight finish. See {@link pauseAll} for every worker. */
  pause(): void {
    this.paused = true;
  }

  /** Claims again after {@link pause}. */
  resume(): void {
    this.paused = false;
    this.kick();
  }

  /** Stops claiming for every worker of this queue on this store (persisted) until {@link resumeAll}. */
  async pauseAll(): Promise<void> {
    await this.store.setPaused(this.name, true);
  }

  /** Undoes {@link pauseAll}. */
  async resumeAll(): Promise<void> {
    await this.store.setPaused(this.name, false);
    this.kick();
  }

  /** Items in `state`, oldest first (default: up to 100). */
  async list(state: QueueItemState, limit = 100): Promise<QueueItem<T>[]> {
    return (await this.store.list(this.name, state, limit)).map((r) => this.toItem(r));
  }

  /** Dead letters with their error history, oldest first. */
  deadLetters(limit = 100): Promise<DeadLetter<T>[]> {
    return this.list('dead', limit);
  }

  /** Sends dead letters (all, or `ids`) back to the queue with fresh attempts; resolves with how many. */
  async redrive(ids?: readonly number[]): Promise<number> {
    const n = await this.store.redrive(this.name, this.clock.now(), ids);
    this.kick();
    return n;
  }

  /**
   * Deletes completed items older than `completedMaxAgeMs` (default: the retention setting, 1 day)
   * and dead letters older than `deadMaxAgeMs` (default 14 days); resolves with how many (0 when
   * another instance is sweeping right now).
   */
  async purge(
    completedMaxAgeMs = this.retention?.completedMs ?? 86_400_000,
    deadMaxAgeMs = this.retention?.deadMs ?? 14 * 86_400_000,
  ): Promise<number> {
    const now = this.clock.now();
    const n = (await this.store.sweep(this.name, now - completedMaxAgeMs, now - deadMaxAgeMs)) ?? 0;
    this.totals.swept += n;
    return n;
  }

  /** Depth, oldest age, throughput counters and dead letters. @throws QUEUE_STORE_UNAVAILABLE while the store is down. */
  async stats(): Promise<QueueStats> {
    const c = await this.store.counts(this.name);
    return {
      pending: c.pending,
      active: c.active,
      completed: c.completed,
      dead: c.dead,
      oldestPendingAgeMs:
        c.oldestPendingAt === null ? null : Math.max(0, this.clock.now() - c.oldestPendingAt),
      paused: c.paused,
      completedTotal: this.totals.completed,
      failedTotal: this.totals.failed,
      deadLetteredTotal: this.totals.dead,
      staleTotal: this.totals.stale,
      sweptTotal: this.totals.swept,
      spooled: this.spool?.count() ?? 0,
    };
  }

  /**
   * Stops claiming, commits pending enqueues, waits for handlers in flight (up to `timeoutMs`,
   * default 10 s), releases what did not finish (without counting the attempt) and closes the store.
   */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closeDeadline = Date.now() + timeoutMs;
    this.running = false;
    this.heartbeatTimer?.cancel();
    this.retentionTimer?.cancel();
    this.wake?.();
    while (this.flushing || this.flushScheduled || this.batch.length > 0) {
      if (this.flushing) await this.flushing;
      else await new Promise((r) => setImmediate(r));
    }
    await this.loop;
    await this.sweeping;
    const pending = [...this.inFlight.values()].map((f) => f.done);
    if (pending.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(pending),
        new Promise((r) => {
          timer = setTimeout(r, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    for (const f of [...this.inFlight.values()]) {
      f.released = true;
      f.abort.abort(keelError('ABORTED', `queue "${this.name}" closing`));
      await this.store.release(f.ref).catch(() => undefined);
    }
    this.inFlight.clear();
    await this.spool?.close();
    await this.store.close();
  }

  /** @internal for tests: the underlying store. */
  get rawStore(): QueueStore {
    return this.store;
  }
}

/**
 * Opens (creating and migrating if needed) a queue. `target` is a SQLite file path (or
 * `sqlite:<path>`) or a `postgres://` / `postgresql://` URL.
 * @throws KeelError `INVALID_CONFIG` for a bad target, URL, key or option (never showing a
 *   password or key), `QUEUE_STORE_OPEN_FAILED` or `QUEUE_STORE_UNAVAILABLE` when it cannot open.
 */
export async function openQueue<T = unknown>(target: string, options: QueueOptions = {}): Promise<Queue<T>> {
  const { name = 'default', clock = systemClock, retention, encryption, ...storeOptions } = options;
  if (typeof name !== 'string' || name === '')
    throw keelError('INVALID_CONFIG', 'queue option name must be a non-empty string');
  const cipher = encryption === undefined ? undefined : payloadCipher(encryption);
  let kept: Required<RetentionOptions> | undefined;
  if (retention !== false) {
    kept = {
      completedMs: retention?.completedMs ?? 86_400_000,
      deadMs: retention?.deadMs ?? 14 * 86_400_000,
      intervalMs: retention?.intervalMs ?? 300_000,
    };
    for (const [k, v] of Object.entries(kept))
      if (!(Number.isFinite(v) && v >= 0) || (k === 'intervalMs' && v < 1))
        throw keelError(
          'INVALID_CONFIG',
          `queue option retention.${k} must be a number of ms >= ${k === 'intervalMs' ? 1 : 0}, got ${String(v)}`,
        );
  }
  const { spool, ...rest } = storeOptions;
  const store = await openQueueStore(target, rest);
  const queue = new Queue<T>(store, name, clock, kept, cipher);
  if (spool !== undefined) {
    if (store.kind !== 'postgres') {
      await store.close();
      throw keelError(
        'INVALID_CONFIG',
        'queue option spool applies to PostgreSQL stores only (SQLite is already local)',
      );
    }
    try {
      queue.attachSpool(
        OutageSpool.open(spool, store, name, clock, DEFAULT_RECONNECT, () => queue.wakeWorkers()),
      );
    } catch (err) {
      await store.close();
      throw err;
    }
  }
  return queue;
}
