import { keelError, type KeelError, systemClock, type Clock } from 'keel';
import type { AnyPolicy, CircuitBreakerPolicy, PolicyContext } from 'keel';
import { decideFailure, isUnavailable } from './failure-decision.js';
import { PartitionBacklog } from './partition-backlog.js';
import type { CounterLike, MetricsHelpers } from './metrics.js';
import { Replayer, type ReplayQueue } from './replayer.js';

export { isUnavailable } from './failure-decision.js';
export type { ReplayJob, ReplayQueue } from './replayer.js';

/** What a call of {@link OutageQueue.runOrQueue} resolves with. */
export type RunOutcome<R> =
  | { status: 'done'; value: R }
  | {
      status: 'queued';
      /** The queue item; with an idempotency key seen before, the first item's id. */
      id: number | string;
      duplicate: boolean;
      /** `unavailable`: this call failed as below; `backlog`: its partition still had queued items. */
      reason: 'unavailable' | 'backlog';
      /** The failure that made the dependency count as unavailable (reason `unavailable`). */
      error?: KeelError;
    };

/** Options of one call of {@link OutageQueue.runOrQueue}. */
export interface RunOrQueueOptions {
  /** Stored with the item: a second queued call with the same key is the same item. */
  idempotencyKey?: string;
  /** Calls with the same key run, queue and replay in call order, one at a time. */
  partitionKey?: string;
  signal?: AbortSignal;
}

/** Options of {@link createOutageQueue}. */
export interface OutageQueueOptions<P, R> {
  /** Where unavailable calls wait; it is not closed by {@link OutageQueue.close}. */
  queue: ReplayQueue<P>;
  /** Runs every call and every replay: typically `pipeline(retry(…), circuitBreaker(…), timeout(…))`. */
  policy: AnyPolicy;
  /** The call to the dependency. It must be idempotent: a replay can repeat a call whose answer was lost. */
  operation: (payload: P, ctx: PolicyContext) => Promise<R>;
  /** The breaker whose state gates replay (default: the first circuit breaker found in `policy`). */
  breaker?: CircuitBreakerPolicy;
  /**
   * Whether a failure means "unavailable, queue it" (default {@link isUnavailable}: an open breaker,
   * retries exhausted on a transient error, a transient error); other failures are thrown to the caller.
   */
  shouldQueue?: (error: KeelError) => boolean;
  /** Replays running at once, at most one per partition (default 4). */
  concurrency?: number;
  /** Lease of a claimed item while it is replayed (default 30 000). */
  leaseMs?: number;
  /** Attempts of a queued item that fails for a reason other than unavailability (default 5). */
  maxAttempts?: number;
  /** While the dependency is still unavailable, wait this long (or until the breaker changes state) before replaying again (default 1 000). */
  retryEveryMs?: number;
  /** Period of the check that moves an expired open breaker to half-open and notices an emptied queue (default 1 000). */
  checkEveryMs?: number;
  clock?: Clock;
  /**
   * Registers `keel_queue_outage_calls_total{queue,outcome}` (done, queued-unavailable,
   * queued-backlog) and `keel_queue_replays_total{queue,outcome}` (replayed, waited, failed); pass
   * `createMetrics()` of @keel/ops.
   */
  metrics?: MetricsHelpers;
  /** The `queue` label of those metrics (default: the queue's `name`, else `outage`). */
  name?: string;
}

/** Counters of an {@link OutageQueue}. */
export interface OutageQueueStats {
  /** Calls answered by the dependency directly. */
  done: number;
  /** Calls queued because the dependency was unavailable. */
  queuedUnavailable: number;
  /** Calls queued behind earlier queued calls of their partition. */
  queuedBacklog: number;
  /** Queued items replayed successfully. */
  replayed: number;
  /** Replays that found the dependency still unavailable and waited. */
  replayWaits: number;
  /** Partitions with queued items this process knows of. */
  partitionsWithBacklog: number;
  /** True until the queue was seen empty when it held items at start. */
  startupBacklog: boolean;
}

function validate<P, R>(options: OutageQueueOptions<P, R>): void {
  for (const key of ['queue', 'policy', 'operation'] as const) {
    if (!options[key]) throw keelError('INVALID_CONFIG', `createOutageQueue: option ${key} is required`);
  }
  for (const key of ['concurrency', 'leaseMs', 'maxAttempts', 'retryEveryMs', 'checkEveryMs'] as const) {
    const v = options[key];
    if (v !== undefined && !(Number.isFinite(v) && v > 0))
      throw keelError(
        'INVALID_CONFIG',
        `createOutageQueue: ${key} must be a positive number, got ${String(v)}`,
      );
  }
}

/**
 * Outage mode: {@link OutageQueue.runOrQueue} runs an operation through a policy pipeline; when
 * the dependency is unavailable the payload is queued durably and the caller told so. A replayer
 * drains the queue through the same operation and pipeline once the breaker lets calls through,
 * in order per partition, and never while the breaker is open.
 */
export class OutageQueue<P, R> {
  private readonly queue: ReplayQueue<P>;
  private readonly policy: AnyPolicy;
  private readonly operation: (payload: P, ctx: PolicyContext) => Promise<R>;
  private readonly shouldQueue: (error: KeelError) => boolean;
  private readonly maxAttempts: number;
  private readonly backlog = new PartitionBacklog();
  private readonly replayer: Replayer<P, R>;
  /** Per partition: the last call's settlement, so calls of a partition run in call order. */
  private readonly tails = new Map<string, Promise<unknown>>();
  private starting: Promise<void> | undefined;
  private readonly calls: { inc(outcome: 'done' | 'queued-unavailable' | 'queued-backlog'): void };
  private readonly counters = {
    done: 0,
    queuedUnavailable: 0,
    queuedBacklog: 0,
  };

  /** @throws KeelError `INVALID_CONFIG` naming the option that is missing or out of range. */
  constructor(options: OutageQueueOptions<P, R>) {
    validate(options);
    this.queue = options.queue;
    this.policy = options.policy;
    this.operation = options.operation;
    this.shouldQueue = options.shouldQueue ?? isUnavailable;
    this.maxAttempts = options.maxAttempts ?? 5;
    const label = options.name ?? (options.queue as { name?: unknown }).name;
    const queue = typeof label === 'string' && label !== '' ? label : 'outage';
    const calls: CounterLike<'queue' | 'outcome'> | undefined = options.metrics?.counter(
      'keel_queue_outage_calls_total',
      'Calls through outage mode: done directly, or queued (the dependency unavailable, or its partition backed up).',
      ['queue', 'outcome'],
    );
    const replays: CounterLike<'queue' | 'outcome'> | undefined = options.metrics?.counter(
      'keel_queue_replays_total',
      'Replays of queued calls: replayed, waited (the dependency still unavailable) or failed.',
      ['queue', 'outcome'],
    );
    for (const outcome of ['done', 'queued-unavailable', 'queued-backlog']) calls?.inc({ queue, outcome }, 0);
    for (const outcome of ['replayed', 'waited', 'failed']) replays?.inc({ queue, outcome }, 0);
    this.calls = { inc: (outcome) => calls?.inc({ queue, outcome }) };
    this.replayer = new Replayer({
      queue: options.queue,
      policy: options.policy,
      operation: options.operation,
      breaker: options.breaker,
      shouldQueue: this.shouldQueue,
      backlog: this.backlog,
      clock: options.clock ?? systemClock,
      concurrency: options.concurrency ?? 4,
      leaseMs: options.leaseMs ?? 30_000,
      maxAttempts: this.maxAttempts,
      retryEveryMs: options.retryEveryMs ?? 1_000,
      checkEveryMs: options.checkEveryMs ?? 1_000,
      onReplay: (outcome) => replays?.inc({ queue, outcome }),
    });
  }

  /**
   * Starts the replayer: reads whether the queue holds items from before (then every partitioned
   * call queues until it has drained), follows the breaker and starts processing. The first
   * `runOrQueue` starts it too; call it at start-up so a backlog left by a previous run replays
   * before any new call.
   */
  start(): Promise<void> {
    this.starting ??= this.replayer.start();
    return this.starting;
  }

  /**
   * Runs `operation(payload)` through the policy. Resolves `{ status: 'done', value }`, or
   * `{ status: 'queued', id }` once the payload is durable when the dependency is unavailable or
   * the partition has queued items. Throws what the operation threw when it is not an
   * unavailability (see `shouldQueue`), and the queue's error when queuing fails too.
   */
  runOrQueue(payload: P, options: RunOrQueueOptions = {}): Promise<RunOutcome<R>> {
    const key = options.partitionKey;
    if (key === undefined) return this.runOne(payload, options);
    const previous = this.tails.get(key) ?? Promise.resolve();
    const call = previous.then(() => this.runOne(payload, options));
    const tail = call.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return call;
  }

  /** Counters for metrics and health. */
  stats(): OutageQueueStats {
    return {
      ...this.counters,
      ...this.replayer.stats(),
      partitionsWithBacklog: this.backlog.partitions,
      startupBacklog: this.backlog.startupBacklog,
    };
  }

  /** Stops following the breaker and checking; the queue itself is closed by its owner (after this). */
  close(): void {
    this.replayer.close();
  }

  private async runOne(payload: P, options: RunOrQueueOptions): Promise<RunOutcome<R>> {
    await this.start();
    const key = options.partitionKey;
    if (key !== undefined && this.backlog.holds(key)) {
      this.counters.queuedBacklog++;
      this.calls.inc('queued-backlog');
      return this.enqueue(payload, options, 'backlog', undefined);
    }
    try {
      const value = await this.policy.execute((ctx) => this.operation(payload, ctx), {
        signal: options.signal,
      });
      this.counters.done++;
      this.calls.inc('done');
      return { status: 'done', value: value as R };
    } catch (err) {
      const decision = decideFailure(err, options.signal, this.shouldQueue);
      if (decision.action === 'throw') throw err;
      this.counters.queuedUnavailable++;
      this.calls.inc('queued-unavailable');
      return this.enqueue(payload, options, 'unavailable', decision.error);
    }
  }

  private async enqueue(
    payload: P,
    options: RunOrQueueOptions,
    reason: 'unavailable' | 'backlog',
    error: KeelError | undefined,
  ): Promise<RunOutcome<R>> {
    this.backlog.enqueueStarted();
    try {
      const item = await this.queue.enqueue(payload, {
        ...(options.idempotencyKey === undefined ? {} : { idempotencyKey: options.idempotencyKey }),
        ...(options.partitionKey === undefined ? {} : { partitionKey: options.partitionKey }),
        maxAttempts: this.maxAttempts,
      });
      if (options.partitionKey !== undefined) this.backlog.queued(options.partitionKey, item);
      return {
        status: 'queued',
        id: item.id,
        duplicate: item.duplicate,
        reason,
        ...(error ? { error } : {}),
      };
    } finally {
      this.backlog.enqueueEnded();
    }
  }
}

/** Creates an {@link OutageQueue}; `await outage.start()` replays what a previous run left queued. */
export function createOutageQueue<P, R>(options: OutageQueueOptions<P, R>): OutageQueue<P, R> {
  return new OutageQueue(options);
}
