import { randomUUID } from 'node:crypto';
import {
  correlationId,
  keelError,
  type KeelError,
  exponential,
  retry,
  type RetryOptions,
  systemClock,
  type Clock,
  withCorrelation,
} from 'keel';
import type {
  GroupRecord,
  GroupRepository,
  GroupStatus,
  NewOperation,
  OperationRecord,
  StopMode,
} from '@keel/store';
import { DEFAULT_STUCK_AFTER_MS, diagnoseRecord, lastProgressAt, stuckReason } from './diagnose.js';
import { GroupFailedError } from './group-failed-error.js';
import { GroupRun, type RunHost } from './group-run.js';
import { groupsHealthCheck, type GroupsHealthCheck, type GroupsHealthOptions } from './health-check.js';
import { LeaseKeeper } from './lease-keeper.js';
import { recoverGroups, takeOver, type RecoverOptions } from './recovery.js';
import {
  cleanupGroups,
  RetentionSchedule,
  type RetentionOptions,
  type RetentionReport,
  type RetentionStatus,
} from './retention.js';
import type { ExecutorRegistry } from './executors.js';
import { bindGroupMetrics, type MetricsHelpers } from './metrics.js';
import { assertTransition } from './status.js';
import type {
  Diagnosis,
  GroupDefinition,
  RecoveryReport,
  GroupProgress,
  OperationSpec,
  RetryRunner,
  RunOutcome,
  StepSpec,
} from './types.js';

/** Default timeout of one operation: 30 minutes. */
export const DEFAULT_OPERATION_TIMEOUT_MS = 30 * 60_000;

/** Options of {@link GroupManager}. */
export interface GroupManagerOptions {
  repository: GroupRepository;
  executors: ExecutorRegistry;
  clock?: Clock;
  /** How long a worker's claim on a group lasts without a heartbeat (default 30 s; renewed every third of it). */
  leaseMs?: number;
  /** Retry settings for each operation and each rollback (default 3 attempts, 100 ms → 10 s exponential). */
  retry?: RetryOptions;
  /** Replaces the retry policy altogether (e.g. a pipeline with a breaker). */
  retryRunner?: RetryRunner;
  /** This process's name in leases (default a random id). */
  owner?: string;
  /** Timeout of operations whose group and spec set none (default 30 min). */
  operationTimeoutMs?: number;
  /** An active group that made no progress for this long is stuck, even while its worker lives (default 10 min). */
  stuckAfterMs?: number;
  /**
   * Retention settings, the defaults of {@link GroupManager.cleanup}. With `everyMs`, cleanup runs by
   * itself every `everyMs` on the manager's clock until {@link GroupManager.close}.
   */
  retention?: RetentionOptions & { everyMs?: number };
  /**
   * Registers `keel_groups{status}`, `keel_groups_stuck` and `keel_group_recoveries_total`; pass
   * `createMetrics()` of @keel/ops.
   */
  metrics?: MetricsHelpers;
}

function positiveMs(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(Number.isFinite(value) && value > 0))
    throw keelError('INVALID_CONFIG', `${name} must be a number of ms > 0, got ${String(value)}`);
  return value;
}

function toNewOperations(steps: readonly StepSpec[], firstStep: number, timeoutMs: number): NewOperation[] {
  const out: NewOperation[] = [];
  const correlation = correlationId() ?? null;
  steps.forEach((step, i) => {
    const ops: readonly OperationSpec[] = Array.isArray(step) ? step : [step as OperationSpec];
    for (const op of ops) {
      if (typeof op.executor !== 'string' || op.executor === '' || typeof op.target !== 'string') {
        throw keelError(
          'INVALID_INPUT',
          `operation ${JSON.stringify(op)} needs an executor name and a target`,
        );
      }
      out.push({
        step: firstStep + i,
        executor: op.executor,
        target: op.target,
        forward: op.forward ?? null,
        rollback: op.rollback ?? null,
        timeoutMs: positiveMs(`operation ${op.executor} ${op.target}: timeoutMs`, op.timeoutMs, timeoutMs),
        correlationId: correlation,
      });
    }
  });
  return out;
}

/**
 * Creates, runs, controls and recovers operation groups stored in a {@link GroupRepository}.
 * Any number of managers in any number of processes may share one store: leases decide who
 * runs a group, and control requests (pause, stop) are read from the store between operations
 * and, for a stop with rollback, at every lease heartbeat.
 */
export class GroupManager {
  readonly repository: GroupRepository;
  readonly executors: ExecutorRegistry;
  readonly clock: Clock;
  readonly leaseMs: number;
  readonly owner: string;
  readonly operationTimeoutMs: number;
  readonly stuckAfterMs: number;
  /** @internal Runs one attempt sequence of an operation. */
  readonly runWithRetry: RetryRunner;
  /** Groups this manager is running now, so stop and recovery act on them in this process. */
  private readonly active = new Map<string, { run: GroupRun; done: Promise<void> }>();
  private readonly retention: RetentionOptions;
  private readonly schedule: RetentionSchedule | undefined;
  private readonly host: RunHost;
  private readonly recordRecovery: ((report: RecoveryReport) => void) | undefined;

  constructor(options: GroupManagerOptions) {
    this.repository = options.repository;
    this.executors = options.executors;
    this.clock = options.clock ?? systemClock;
    this.leaseMs = positiveMs('leaseMs', options.leaseMs, 30_000);
    this.owner = options.owner ?? `keel-${randomUUID().slice(0, 8)}`;
    this.operationTimeoutMs = positiveMs(
      'operationTimeoutMs',
      options.operationTimeoutMs,
      DEFAULT_OPERATION_TIMEOUT_MS,
    );
    this.stuckAfterMs = positiveMs('stuckAfterMs', options.stuckAfterMs, DEFAULT_STUCK_AFTER_MS);
    if (options.retryRunner !== undefined) {
      this.runWithRetry = options.retryRunner;
    } else {
      const policy = retry({
        maxAttempts: 3,
        backoff: exponential({ initialMs: 100, maxMs: 10_000, multiplier: 2, jitter: 0.2 }),
        ...options.retry,
        clock: this.clock,
      });
      this.runWithRetry = (fn, signal) => policy.execute(fn, signal === undefined ? {} : { signal });
    }
    const { everyMs, ...retention } = options.retention ?? {};
    this.retention = retention;
    this.host = {
      repository: this.repository,
      executors: this.executors,
      clock: this.clock,
      runWithRetry: this.runWithRetry,
      transition: (id, to, extra) => this.transition(id, to, extra),
      log: (id, level, message) => this.log(id, level, message),
      require: (id) => this.require(id),
    };
    this.recordRecovery =
      options.metrics === undefined
        ? undefined
        : bindGroupMetrics(options.metrics, {
            countByStatus: () => this.repository.countByStatus(),
            stuckCount: async () => (await this.stuck()).length,
          });
    this.schedule =
      everyMs === undefined
        ? undefined
        : new RetentionSchedule(this.clock, positiveMs('retention.everyMs', everyMs, 1), () =>
            this.cleanup(),
          );
  }

  /** Stores a new group in `pending`; returns its id. The current correlation id is stored with it. */
  async create(definition: GroupDefinition): Promise<string> {
    const id = definition.id ?? randomUUID();
    const now = this.clock.now();
    const onStuck = definition.onStuck ?? 'retry';
    if (!['retry', 'rollback', 'manual'].includes(onStuck))
      throw keelError(
        'INVALID_INPUT',
        `onStuck must be retry, rollback or manual, got ${JSON.stringify(onStuck)}`,
      );
    const groupTimeoutMs = positiveMs(
      'operationTimeoutMs',
      definition.operationTimeoutMs,
      this.operationTimeoutMs,
    );
    const operations = toNewOperations(definition.steps, 0, groupTimeoutMs);
    if (await this.repository.getGroup(id)) {
      throw keelError('CONFLICT', `a group with id ${id} already exists`, { groupId: id });
    }
    await this.repository.insertGroup(
      {
        id,
        name: definition.name,
        status: 'pending',
        onFailure: definition.onFailure ?? 'rollback',
        stopMode: null,
        createdAt: now,
        startedAt: null,
        updatedAt: now,
        finishedAt: null,
        leaseOwner: null,
        leaseExpiresAt: null,
        lastError: null,
        recoverAttempts: 0,
        progressAt: now,
        onStuck,
        operationTimeoutMs: definition.operationTimeoutMs ?? null,
        correlationId: correlationId() ?? null,
      },
      operations,
    );
    await this.log(id, 'info', `created with ${String(operations.length)} operations`);
    return id;
  }

  /** Appends steps after the existing ones, also while the group runs; refused once it has finished. */
  async append(id: string, steps: readonly StepSpec[]): Promise<number[]> {
    const group = await this.require(id);
    if (!['pending', 'running', 'paused'].includes(group.status)) {
      throw keelError(
        'GROUP_INVALID_TRANSITION',
        `cannot append to group ${id}: it is ${group.status}`,
        {
          groupId: id,
        },
        { kind: 'client', httpStatus: 409 },
      );
    }
    const ops = await this.repository.getOperations(id);
    const nextStep = ops.reduce((max, op) => Math.max(max, op.step + 1), 0);
    const seqs = await this.repository.appendOperations(
      id,
      toNewOperations(steps, nextStep, group.operationTimeoutMs ?? this.operationTimeoutMs),
    );
    await this.log(id, 'info', `appended operations ${seqs.join(', ')}`);
    return seqs;
  }

  get(id: string): Promise<GroupRecord | undefined> {
    return this.repository.getGroup(id);
  }

  operations(id: string): Promise<OperationRecord[]> {
    return this.repository.getOperations(id);
  }

  list(statuses?: readonly GroupStatus[]): Promise<GroupRecord[]> {
    return this.repository.listGroups(statuses === undefined ? {} : { statuses });
  }

  logs(id: string): ReturnType<GroupRepository['getLogs']> {
    return this.repository.getLogs(id);
  }

  /** Done / total, current operations with their last progress report, status and times. */
  async progress(id: string): Promise<GroupProgress> {
    const group = await this.require(id);
    const ops = await this.repository.getOperations(id);
    return {
      id,
      name: group.name,
      status: group.status,
      done: ops.filter((o) => o.status === 'done').length,
      total: ops.length,
      current: ops
        .filter((o) => o.status === 'running')
        .map((o) => ({
          seq: o.seq,
          executor: o.executor,
          target: o.target,
          startedAt: o.startedAt,
          timeoutMs: o.timeoutMs,
          progress: o.progress,
        })),
      startedAt: group.startedAt,
      lastActivityAt: group.updatedAt,
      lastProgressAt: lastProgressAt(group),
      finishedAt: group.finishedAt,
    };
  }

  /** Status, last error and its kind, time since the last activity and progress, whether stuck, and the strategy. */
  async diagnose(id: string): Promise<Diagnosis> {
    return diagnoseRecord(await this.require(id), this.clock.now(), this.stuckAfterMs);
  }

  /**
   * Groups in `running`, `stopping` or `rolling_back` that are stuck: their worker's lease expired,
   * or they made no progress for `stuckAfterMs` although the worker renews its lease.
   */
  async stuck(): Promise<GroupRecord[]> {
    const now = this.clock.now();
    const active = await this.repository.listGroups({ statuses: ['running', 'stopping', 'rolling_back'] });
    return active.filter((g) => stuckReason(g, now, this.stuckAfterMs) !== false);
  }

  /**
   * Runs a pending group here until it completes, pauses, stops or fails. Resolves with the final
   * status; rejects with {@link GroupFailedError} (an AggregateError with every error) when an
   * operation failed, whatever the rollback's outcome.
   */
  async run(id: string): Promise<RunOutcome> {
    await this.transition(id, 'running', { startedAt: this.clock.now() });
    return this.drive(id);
  }

  /** Asks the group to pause after its current operation (immediately if nobody runs it). */
  async pause(id: string): Promise<void> {
    await this.transition(id, 'paused');
    await this.log(id, 'info', 'pause requested');
  }

  /**
   * Resumes a paused group. With `run: true` (default) it runs here; with `run: false` it goes
   * back to `pending` for whichever worker runs pending groups (what the CLI does).
   */
  async resume(id: string, options: { run?: boolean } = {}): Promise<RunOutcome> {
    if (options.run === false) {
      await this.transition(id, 'pending');
      await this.log(id, 'info', 'resume requested');
      return { id, status: 'pending' };
    }
    await this.transition(id, 'running');
    await this.log(id, 'info', 'resumed');
    return this.drive(id);
  }

  /**
   * Stops a group: `graceful` lets the current operation finish, then stops; `rollback` cancels
   * the operations in flight (their signal aborts) and rolls back what was done. Honoured by
   * whichever process runs the group: at once in this process, within a lease heartbeat in another.
   * If nobody runs it, a graceful stop takes effect now; a rollback stop of a paused group runs
   * here unless `drive: false`, which leaves it `stopping` for {@link GroupManager.recover}.
   */
  async stop(id: string, options: { mode?: StopMode; drive?: boolean } = {}): Promise<RunOutcome> {
    const mode = options.mode ?? 'graceful';
    const group = await this.require(id);
    if (group.status === 'pending' && mode === 'graceful') {
      await this.transition(id, 'stopped', { finishedAt: this.clock.now(), stopMode: mode });
      return { id, status: 'stopped' };
    }
    if (group.status === 'pending') {
      await this.transition(id, 'rolled_back', { finishedAt: this.clock.now(), stopMode: mode });
      return { id, status: 'rolled_back' };
    }
    if (group.status === 'paused' && mode === 'graceful') {
      await this.transition(id, 'stopped', { finishedAt: this.clock.now(), stopMode: mode });
      return { id, status: 'stopped' };
    }
    await this.transition(id, 'stopping', { stopMode: mode });
    await this.log(id, 'info', `stop (${mode}) requested`);
    if (mode === 'rollback') this.active.get(id)?.run.cancelStep(stoppedError(id));
    if (options.drive ?? group.status === 'paused') return this.tryDrive(id);
    return { id, status: 'stopping' };
  }

  /** Rolls back a completed, stopped, failed or rollback-failed group here. */
  async rollback(id: string): Promise<RunOutcome> {
    await this.transition(id, 'rolling_back');
    await this.log(id, 'info', 'rollback requested');
    return this.drive(id);
  }

  /** Runs every pending group, one after another, here. */
  async runPending(): Promise<RunOutcome[]> {
    const out: RunOutcome[] = [];
    for (const group of await this.repository.listGroups({ statuses: ['pending'] })) {
      try {
        out.push(await this.run(group.id));
      } catch (err) {
        out.push({ id: group.id, status: err instanceof GroupFailedError ? err.status : 'failed' });
      }
    }
    return out;
  }

  /** Runs the recovery strategy of every stuck and failed group; see {@link recoverGroups}. */
  async recover(options?: RecoverOptions): Promise<RecoveryReport> {
    const report = await recoverGroups(this, options);
    this.recordRecovery?.(report);
    return report;
  }

  /**
   * Deletes finished groups and old logs by age, and removes orphaned temporary resources; see
   * {@link cleanupGroups}. Options default to the manager's `retention` settings.
   */
  cleanup(options?: RetentionOptions): Promise<RetentionReport> {
    return cleanupGroups(this, { ...this.retention, ...options });
  }

  /** The last scheduled cleanup (with the `retention.everyMs` option), or undefined. */
  retentionStatus(): RetentionStatus | undefined {
    return this.schedule?.status();
  }

  /** A health check with auto-recovery, in the shape @keel/ops registers; see {@link groupsHealthCheck}. */
  healthCheck(options?: GroupsHealthOptions): GroupsHealthCheck {
    return groupsHealthCheck(this, options);
  }

  /** Stops the retention schedule (groups in flight are not touched); resolves when a scheduled run has ended. */
  async close(): Promise<void> {
    await this.schedule?.stop();
  }

  /** Moves the group to `to` if that is allowed from its current status (compare-and-set); a change is progress. */
  async transition(
    id: string,
    to: GroupStatus,
    extra: Partial<
      Pick<GroupRecord, 'startedAt' | 'finishedAt' | 'stopMode' | 'lastError' | 'recoverAttempts'>
    > = {},
  ): Promise<void> {
    for (let i = 0; i < 5; i++) {
      const group = await this.require(id);
      assertTransition(id, group.status, to);
      const now = this.clock.now();
      const patch = { ...extra, status: to, updatedAt: now, progressAt: now };
      if (group.startedAt !== null) delete patch.startedAt;
      if (await this.repository.updateGroup(id, patch, [group.status])) {
        if (group.status !== to) await this.log(id, 'info', `${group.status} → ${to}`);
        return;
      }
    }
    throw keelError('CONFLICT', `group ${id} kept changing status; try again`, { groupId: id });
  }

  /** Like drive(), but a group that fails resolves with its status instead of rejecting. */
  async tryDrive(id: string): Promise<RunOutcome> {
    try {
      return await this.drive(id);
    } catch (err) {
      if (err instanceof GroupFailedError) return { id, status: err.status };
      throw err;
    }
  }

  /**
   * Works on a group in an active status until it settles: runs operations, honours pause and
   * stop requests, rolls back. Holds the group's lease meanwhile, renewed by a heartbeat, and runs
   * under the correlation id the group was created with.
   */
  async drive(id: string): Promise<RunOutcome> {
    if (this.active.has(id)) throw leasedError(id, 'this process');
    const run = new GroupRun(this.host, id);
    let ended!: () => void;
    // Registered before the first await, so a second drive of the group in this process is refused.
    this.active.set(id, { run, done: new Promise<void>((resolve) => (ended = resolve)) });
    let keeper: LeaseKeeper | undefined;
    // On the system clock (whose timers are unref'd), a run in flight keeps the process alive as
    // an open socket would: a process whose only work is a hung operation must keep its
    // heartbeat, so the hang is found by progress and the operation cancelled, not silently dropped.
    const alive = this.clock === systemClock ? setInterval(() => undefined, 2 ** 30) : undefined;
    try {
      const now = this.clock.now();
      if (!(await this.repository.acquireLease(id, this.owner, now, now + this.leaseMs)))
        throw leasedError(id, 'another process');
      keeper = new LeaseKeeper(this.repository, this.clock, this.owner, this.leaseMs, id, {
        lost: (reason) => {
          run.lose(reason);
          void this.log(id, 'warn', `${this.owner} lost the lease`).catch(() => undefined);
        },
        renewed: (latest) => {
          if (latest.status === 'stopping' && latest.stopMode === 'rollback')
            run.cancelStep(stoppedError(id));
        },
      });
      keeper.start();
      const cid = (await this.require(id)).correlationId ?? undefined;
      return await (cid === undefined ? run.loop() : withCorrelation(cid, () => run.loop()));
    } finally {
      if (keeper !== undefined) {
        keeper.stop();
        await this.repository.releaseLease(id, this.owner).catch(() => undefined);
      }
      clearInterval(alive);
      this.active.delete(id);
      ended();
    }
  }

  /**
   * @internal Takes a stuck group away from whoever runs it, so recovery can drive it: a run in this
   * process is stopped (and awaited); another process's lease is taken over, and that process
   * stops at its next heartbeat without recording anything.
   * @throws KeelError `GROUP_LEASED` when the holder changed meanwhile.
   */
  async takeOverFrom(group: GroupRecord, reason: string): Promise<void> {
    await takeOver(this, this.active.get(group.id), group, reason);
  }

  /** @internal */
  async log(id: string, level: 'info' | 'warn' | 'error', message: string): Promise<void> {
    await this.repository.addLog({ groupId: id, at: this.clock.now(), level, message });
  }

  /** @internal The group, or NOT_FOUND naming the store. */
  async require(id: string): Promise<GroupRecord> {
    const group = await this.repository.getGroup(id);
    if (group === undefined) {
      throw keelError(
        'NOT_FOUND',
        `no group with id ${id} in the groups store at ${this.repository.location}`,
        { groupId: id, store: this.repository.location },
        { stack: false },
      );
    }
    return group;
  }
}

function leasedError(id: string, holder: string): KeelError {
  return keelError(
    'GROUP_LEASED',
    `group ${id} is being run by ${holder}; wait for it, or for its lease to expire`,
    { groupId: id },
    { kind: 'client', httpStatus: 409, stack: false },
  );
}

function stoppedError(id: string): KeelError {
  return keelError(
    'GROUP_STOPPED',
    `group ${id} was stopped with rollback; the operation in flight was cancelled`,
    { groupId: id },
    { kind: 'client', httpStatus: 409, stack: false },
  );
}
