import { classify, keelError, systemClock, type Clock } from 'keel';
import {
  openWithRetry,
  redactPostgresUrl,
  startupSettings,
  type StartupRetryOptions,
  openQueueStore,
  type QueueItemState,
  type QueueRow,
  type QueueStore,
  type QueueStoreOptions,
} from '@keel/store';
import { EnqueueCommitter, type EnqueueOptions, type Enqueued } from './enqueue.js';
import {
  isEncryptedPayload,
  payloadCipher,
  type EncryptionOptions,
  type PayloadCipher,
} from './encryption.js';
import { bindQueueMetrics, type MetricsHelpers } from './metrics.js';
import type { Outcome } from './outcomes.js';
import { PayloadCodec } from './payload.js';
import { RetentionSweeper, retentionSettings, type RetentionOptions } from './retention.js';
import { OutageSpool } from './spool.js';
import { DEFAULT_RECONNECT, isStoreUnavailable, StoreHealth } from './store-health.js';
import { WorkerLoop, type ProcessOptions, type QueueJob } from './worker.js';

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
   * Registers the queue's metrics (see docs/queue.md): depth by state, oldest pending age, whether
   * the store answers, and handled items by outcome, labelled with the queue's name. Pass
   * `createMetrics()` of @keel/ops (or anything with its `counter` and `gauge`).
   */
  metrics?: MetricsHelpers;
  /**
   * Pending items above this are a backlog: exported as `keel_queue_depth_threshold` for the alert
   * rules (and the queue's health check, see {@link Queue.healthCheck}). Default 10 000.
   */
  depthThreshold?: number;
  /**
   * PostgreSQL only: a server that is unreachable when the queue opens is retried with backoff for
   * up to `maxWaitMs` (default 30 s) before `openQueue` gives up, its health check (`queue:<name>`,
   * with `startup.health`) saying "starting" meanwhile; `false` fails at once.
   */
  startup?: StartupRetryOptions | false;
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
  /** The correlation id of the request that enqueued it, or null. */
  correlationId: string | null;
}

/** A dead letter with its error history. */
export type DeadLetter<T> = QueueItem<T>;

/**
 * A persistent operation queue on SQLite or PostgreSQL (see {@link openQueue}). Enqueues issued
 * while a commit is running are committed together (group commit); `enqueue` resolves only after
 * its commit. Completions are batched the same way.
 */
export class Queue<T = unknown> {
  private closed = false;
  private readonly health = new StoreHealth();
  private readonly codec: PayloadCodec<T>;
  private readonly committer: EnqueueCommitter<T>;
  private readonly worker: WorkerLoop<T>;
  private readonly sweeper: RetentionSweeper;

  /**
   * False while the store (PostgreSQL) is unreachable, as seen by the last call this instance
   * made; workers keep polling with `reconnectBackoff` and this turns true again by itself.
   */
  get storeAvailable(): boolean {
    return this.health.available;
  }

  /** Use {@link openQueue}. */
  constructor(
    private readonly store: QueueStore,
    readonly name: string,
    private readonly clock: Clock = systemClock,
    retention?: Required<RetentionOptions>,
    cipher?: PayloadCipher,
  ) {
    this.codec = new PayloadCodec<T>(name, cipher);
    this.worker = new WorkerLoop<T>(store, name, clock, this.codec, this.health);
    // Workers claim what a commit added at once.
    const onCommitted = (): void => this.worker.kick();
    this.committer = new EnqueueCommitter<T>(store, name, clock, this.codec, this.health, onCommitted);
    this.sweeper = new RetentionSweeper(store, name, clock, retention);
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
    return this.committer.enqueue(payload, options);
  }

  /** @internal openQueue attaches the spool once the queue exists (its mover wakes the workers). */
  attachSpool(spool: OutageSpool): void {
    this.committer.attachSpool(spool);
  }

  /**
   * Starts workers running `handler`. A rejection is retried after the backoff (or `maxDelayMs`
   * when the retry budget is spent), then dead-lettered; a non-retryable KeelError is dead-lettered
   * at once. While the store is unavailable, workers keep polling with `reconnectBackoff` and
   * resume by themselves.
   * @throws KeelError `INVALID_CONFIG` when already processing.
   */
  process(handler: (job: QueueJob<T>) => Promise<void>, options: ProcessOptions = {}): void {
    if (this.worker.started || this.closed)
      throw keelError('INVALID_CONFIG', `queue "${this.name}" is already processing or closed`);
    this.worker.start(handler, options);
  }

  /** @internal Lets workers claim at once (the spool moved items). */
  wakeWorkers(): void {
    this.worker.kick();
  }

  private toItem(r: QueueRow): QueueItem<T> {
    const encrypted = isEncryptedPayload(r.payload);
    return {
      id: r.id,
      state: r.status,
      payload: encrypted && !this.codec.hasKey ? undefined : this.codec.decode(r.payload),
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
      correlationId: r.correlationId,
    };
  }

  /** Stops claiming in this instance; handlers in flight finish. See {@link pauseAll} for every worker. */
  pause(): void {
    this.worker.pause();
  }

  /** Claims again after {@link pause}. */
  resume(): void {
    this.worker.resume();
  }

  /** Stops claiming for every worker of this queue on this store (persisted) until {@link resumeAll}. */
  async pauseAll(): Promise<void> {
    await this.store.setPaused(this.name, true);
  }

  /** Undoes {@link pauseAll}. */
  async resumeAll(): Promise<void> {
    await this.store.setPaused(this.name, false);
    this.worker.kick();
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
    this.worker.kick();
    return n;
  }

  /**
   * Deletes completed items older than `completedMaxAgeMs` (default: the retention setting, 1 day)
   * and dead letters older than `deadMaxAgeMs` (default 14 days); resolves with how many (0 when
   * another instance is sweeping right now).
   */
  purge(completedMaxAgeMs?: number, deadMaxAgeMs?: number): Promise<number> {
    return this.sweeper.purge(completedMaxAgeMs, deadMaxAgeMs);
  }

  /** Depth, oldest age, throughput counters and dead letters. @throws QUEUE_STORE_UNAVAILABLE while the store is down. */
  async stats(): Promise<QueueStats> {
    const c = await this.store.counts(this.name);
    const totals = this.worker.totals;
    return {
      pending: c.pending,
      active: c.active,
      completed: c.completed,
      dead: c.dead,
      oldestPendingAgeMs:
        c.oldestPendingAt === null ? null : Math.max(0, this.clock.now() - c.oldestPendingAt),
      paused: c.paused,
      completedTotal: totals.completed,
      failedTotal: totals.failed,
      deadLetteredTotal: totals.dead,
      staleTotal: totals.stale,
      sweptTotal: this.sweeper.swept,
      spooled: this.committer.spool?.count() ?? 0,
    };
  }

  /**
   * Stops claiming, commits pending enqueues, waits for handlers in flight (up to `timeoutMs`,
   * default 10 s), releases what did not finish (without counting the attempt) and closes the store.
   */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.worker.stop(Date.now() + timeoutMs);
    this.sweeper.stop();
    await this.committer.drain();
    await this.worker.stopped();
    await this.sweeper.idle();
    await this.worker.release(timeoutMs);
    await this.committer.spool?.close();
    await this.store.close();
  }

  /** @internal for tests: the underlying store. */
  get rawStore(): QueueStore {
    return this.store;
  }

  /** Pending items above which the queue is backed up (the `depthThreshold` option). */
  depthThreshold = DEFAULT_DEPTH_THRESHOLD;

  /** @internal Tells `listener` of every outcome this instance counts (metrics). */
  onOutcome(listener: (outcome: Outcome) => void): void {
    this.worker.onOutcome(listener);
  }

  /**
   * A health check in the shape @keel/ops registers (`HealthRegistry.register(queue.healthCheck())`):
   * `fail` while the store is unreachable, `warn` while more than `maxDepth` items (default: the
   * `depthThreshold` option) are pending, else `pass`; its `observedValue` is the depth, oldest age
   * and dead letters.
   */
  healthCheck(options: { name?: string; maxDepth?: number } = {}): QueueHealthCheck {
    const maxDepth = options.maxDepth ?? this.depthThreshold;
    return {
      name: options.name ?? `queue:${this.name}`,
      componentType: 'datastore',
      run: async () => {
        let s: QueueStats;
        try {
          s = await this.stats();
        } catch (err) {
          return { status: 'fail', output: classify(err).message };
        }
        const observedValue = { pending: s.pending, oldestPendingAgeMs: s.oldestPendingAgeMs, dead: s.dead };
        if (s.pending > maxDepth)
          return {
            status: 'warn',
            observedValue,
            output: `${String(s.pending)} pending items in queue "${this.name}" (threshold ${String(maxDepth)}); the oldest has waited ${String(Math.round((s.oldestPendingAgeMs ?? 0) / 1000))} s`,
          };
        return { status: 'pass', observedValue };
      },
    };
  }
}

/** What {@link Queue.healthCheck} returns: structurally a @keel/ops `HealthCheck`. */
export interface QueueHealthCheck {
  name: string;
  componentType: 'datastore';
  run: () => Promise<{
    status: 'pass' | 'warn' | 'fail';
    observedValue?: { pending: number; oldestPendingAgeMs: number | null; dead: number };
    output?: string;
  }>;
}

/** Default of the `depthThreshold` option. */
export const DEFAULT_DEPTH_THRESHOLD = 10_000;

/**
 * Opens (creating and migrating if needed) a queue. `target` is a SQLite file path (or
 * `sqlite:<path>`) or a `postgres://` / `postgresql://` URL.
 * @throws KeelError `INVALID_CONFIG` for a bad target, URL, key or option (never showing a
 *   password or key), `QUEUE_STORE_OPEN_FAILED` or `QUEUE_STORE_UNAVAILABLE` when it cannot open.
 */
export async function openQueue<T = unknown>(target: string, options: QueueOptions = {}): Promise<Queue<T>> {
  const {
    name = 'default',
    clock = systemClock,
    retention,
    encryption,
    metrics,
    depthThreshold = DEFAULT_DEPTH_THRESHOLD,
    startup,
    ...storeOptions
  } = options;
  if (!(Number.isSafeInteger(depthThreshold) && depthThreshold >= 0))
    throw keelError(
      'INVALID_CONFIG',
      `queue option depthThreshold must be an integer >= 0, got ${String(depthThreshold)}`,
    );
  if (typeof name !== 'string' || name === '')
    throw keelError('INVALID_CONFIG', 'queue option name must be a non-empty string');
  const cipher = encryption === undefined ? undefined : payloadCipher(encryption);
  const kept = retentionSettings(retention);
  const { spool, ...rest } = storeOptions;
  const store = /^postgres(ql)?:/i.test(target)
    ? await openWithRetry(
        () => openQueueStore(target, rest),
        startupSettings(startup, {
          what: `the queue store at ${redactPostgresUrl(target)}`,
          checkName: `queue:${name}`,
          // A timer that keeps the process alive: a service waiting for its database is not done.
          sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
          now: () => Date.now(),
          retryable: isStoreUnavailable,
        }),
      )
    : await openQueueStore(target, rest);
  const queue = new Queue<T>(store, name, clock, kept, cipher);
  queue.depthThreshold = depthThreshold;
  if (metrics !== undefined)
    bindQueueMetrics(metrics, {
      name,
      counts: () => store.counts(name),
      now: () => clock.now(),
      depthThreshold,
      onOutcome: (listener) => {
        queue.onOutcome(listener);
      },
    });
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
