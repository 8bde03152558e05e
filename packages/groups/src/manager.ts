import { randomUUID } from 'node:crypto';
import {
  classify,
  keelError,
  type KeelError,
  exponential,
  retry,
  type RetryOptions,
  systemClock,
  type Clock,
  type TimerHandle,
} from 'keel';
import type {
  GroupRecord,
  GroupRepository,
  GroupStatus,
  NewOperation,
  OperationRecord,
  StoredError,
  StopMode,
} from '@keel/store';
import { diagnoseRecord } from './diagnose.js';
import {
  cleanupGroups,
  groupsHealthCheck,
  recoverGroups,
  type GroupsHealthCheck,
  type RecoverOptions,
  type RetentionOptions,
  type RetentionReport,
} from './recovery.js';
import { GroupFailedError } from './group-failed-error.js';
import type { ExecutorRegistry } from './executors.js';
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
}

const toStored = (err: KeelError, phase: 'forward' | 'rollback', seq: number): StoredError => ({
  code: err.code,
  kind: err.kind,
  message: err.message,
  retryable: err.retryable,
  phase,
  seq,
});

/** The error that counts: the cause of RETRIES_EXHAUSTED, so diagnosis sees the real failure. */
function rootError(err: unknown): KeelError {
  const e = classify(err);
  return e.code === 'RETRIES_EXHAUSTED' && e.cause !== undefined ? classify(e.cause) : e;
}

function toNewOperations(steps: readonly StepSpec[], firstStep: number): NewOperation[] {
  const out: NewOperation[] = [];
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
      });
    }
  });
  return out;
}

/**
 * Creates, runs, controls and recovers operation groups stored in a {@link GroupRepository}.
 * Any number of managers in any number of processes may share one store: leases decide who
 * runs a group, and control requests (pause, stop) are read from the store between operations.
 */
export class GroupManager {
  readonly repository: GroupRepository;
  readonly executors: ExecutorRegistry;
  readonly clock: Clock;
  readonly leaseMs: number;
  readonly owner: string;
  private readonly runWithRetry: RetryRunner;

  constructor(options: GroupManagerOptions) {
    this.repository = options.repository;
    this.executors = options.executors;
    this.clock = options.clock ?? systemClock;
    this.leaseMs = options.leaseMs ?? 30_000;
    this.owner = options.owner ?? `keel-${randomUUID().slice(0, 8)}`;
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
  }

  /** Stores a new group in `pending`; returns its id. */
  async create(definition: GroupDefinition): Promise<string> {
    const id = definition.id ?? randomUUID();
    const now = this.clock.now();
    const operations = toNewOperations(definition.steps, 0);
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
    const seqs = await this.repository.appendOperations(id, toNewOperations(steps, nextStep));
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

  /** Done / total, current operations, status and times. */
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
        .map((o) => ({ seq: o.seq, executor: o.executor, target: o.target })),
      startedAt: group.startedAt,
      lastActivityAt: group.updatedAt,
      finishedAt: group.finishedAt,
    };
  }

  /** Status, last error and its kind, time since the last activity, whether stuck, and the strategy. */
  async diagnose(id: string): Promise<Diagnosis> {
    return diagnoseRecord(await this.require(id), this.clock.now());
  }

  /** Groups whose worker's lease expired while they were running, stopping or rolling back. */
  async stuck(): Promise<GroupRecord[]> {
    const now = this.clock.now();
    const active = await this.repository.listGroups({ statuses: ['running', 'stopping', 'rolling_back'] });
    return active.filter((g) => g.leaseExpiresAt === null || g.leaseExpiresAt <= now);
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
   * Stops a group: `graceful` lets the current operation finish, then stops; `rollback` stops and
   * rolls back what was done. Honoured by whichever process runs the group, between operations.
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
  recover(options?: RecoverOptions): Promise<RecoveryReport> {
    return recoverGroups(this, options);
  }

  /** Deletes finished groups and old logs by age; see {@link cleanupGroups}. */
  cleanup(options?: RetentionOptions): Promise<RetentionReport> {
    return cleanupGroups(this, options);
  }

  /** A health check with auto-recovery, in the shape @keel/ops registers; see {@link groupsHealthCheck}. */
  healthCheck(options?: RecoverOptions & { name?: string }): GroupsHealthCheck {
    return groupsHealthCheck(this, options);
  }

  /** Moves the group to `to` if that is allowed from its current status (compare-and-set). */
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
      const patch = { ...extra, status: to, updatedAt: this.clock.now() };
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
   * stop requests, rolls back. Holds the group's lease meanwhile, renewed by a heartbeat.
   */
  async drive(id: string): Promise<RunOutcome> {
    const now = this.clock.now();
    if (!(await this.repository.acquireLease(id, this.owner, now, now + this.leaseMs))) {
      throw keelError(
        'GROUP_LEASED',
        `group ${id} is being run by another process; wait for it, or for its lease to expire`,
        { groupId: id },
        { kind: 'client', httpStatus: 409, stack: false },
      );
    }
    const abort = new AbortController();
    let heartbeat: TimerHandle | undefined;
    const beat = (): void => {
      heartbeat = this.clock.setTimer(Math.max(1, Math.floor(this.leaseMs / 3)), () => {
        const at = this.clock.now();
        this.repository.renewLease(id, this.owner, at, at + this.leaseMs).then(
          (held) => {
            if (held) beat();
            else {
              abort.abort(
                keelError(
                  'GROUP_LEASE_LOST',
                  `${this.owner} lost the lease on group ${id} to another process; stopping without recording`,
                  { groupId: id },
                ),
              );
              void this.log(id, 'warn', `${this.owner} lost the lease`).catch(() => undefined);
            }
          },
          () => {
            beat();
          },
        );
      });
    };
    beat();
    const errors: KeelError[] = [];
    try {
      return await this.loop(id, abort.signal, errors);
    } finally {
      heartbeat?.cancel();
      await this.repository.releaseLease(id, this.owner).catch(() => undefined);
    }
  }

  private async loop(id: string, signal: AbortSignal, errors: KeelError[]): Promise<RunOutcome> {
    for (;;) {
      if (signal.aborted) throw classify(signal.reason);
      const group = await this.require(id);
      switch (group.status) {
        case 'running': {
          const ops = await this.repository.getOperations(id);
          const open = ops.filter(
            (o) => o.status === 'pending' || o.status === 'running' || o.status === 'failed',
          );
          if (open.length === 0) {
            await this.transition(id, 'completed', { finishedAt: this.clock.now() });
            return { id, status: 'completed' };
          }
          const step = Math.min(...open.map((o) => o.step));
          const failures = await this.runStep(
            id,
            open.filter((o) => o.step === step),
            signal,
          );
          if (signal.aborted) throw classify(signal.reason);
          if (failures.length > 0) {
            errors.push(...failures.map((f) => f.error));
            const first = failures[0];
            const lastError = first === undefined ? null : toStored(first.error, 'forward', first.seq);
            // A pause or stop may have raced the failure: a failure still wins over them.
            const target = group.onFailure === 'stop' ? 'failed' : 'rolling_back';
            const current = await this.require(id);
            if (current.status === 'paused') await this.transition(id, 'running');
            else if (current.status === 'stopping' && target === 'failed') {
              await this.transition(id, 'rolling_back', { lastError });
              break;
            }
            await this.transition(id, target, {
              lastError,
              ...(target === 'failed' ? { finishedAt: this.clock.now() } : {}),
            });
            if (target === 'failed') throw new GroupFailedError(id, 'failed', errors);
          }
          break;
        }
        case 'stopping':
          if (group.stopMode === 'rollback') {
            await this.transition(id, 'rolling_back');
            break;
          }
          await this.transition(id, 'stopped', { finishedAt: this.clock.now() });
          return { id, status: 'stopped' };
        case 'rolling_back': {
          const rollbackErrors = await this.rollbackAll(id, signal);
          errors.push(...rollbackErrors);
          const status = rollbackErrors.length > 0 ? 'rollback_failed' : 'rolled_back';
          const lastRollback = rollbackErrors[0];
          await this.transition(id, status, {
            finishedAt: this.clock.now(),
            ...(lastRollback === undefined
              ? {}
              : { lastError: { ...toStored(lastRollback, 'rollback', -1) } }),
          });
          if (errors.length > 0) throw new GroupFailedError(id, status, errors);
          return { id, status };
        }
        default:
          return { id, status: group.status };
      }
    }
  }

  private async runStep(
    id: string,
    ops: readonly OperationRecord[],
    signal: AbortSignal,
  ): Promise<{ seq: number; error: KeelError }[]> {
    const results = await Promise.all(ops.map((op) => this.runOne(id, op, 'forward', signal)));
    return results.filter((r): r is { seq: number; error: KeelError } => r !== undefined);
  }

  private async runOne(
    id: string,
    op: OperationRecord,
    direction: 'forward' | 'rollback',
    signal: AbortSignal,
  ): Promise<{ seq: number; error: KeelError } | undefined> {
    const label = `${direction} ${String(op.seq)} ${op.executor} ${op.target}`;
    let attempts = op.attempts;
    if (direction === 'forward') {
      await this.repository.updateOperation(id, op.seq, {
        status: 'running',
        startedAt: this.clock.now(),
        error: null,
      });
      await this.touch(id);
    }
    try {
      const executor = this.executors.get(op.executor);
      const rollbackFn = executor.rollback?.bind(executor);
      await this.runWithRetry(async (ctx) => {
        attempts++;
        const execCtx = { groupId: id, seq: op.seq, target: op.target, attempt: ctx.attempt, signal };
        if (direction === 'forward') await executor.forward(op.forward, execCtx);
        else if (rollbackFn !== undefined) await rollbackFn(op.rollback, execCtx);
      }, signal);
      // A worker that lost its lease must not record anything: the group belongs to another now.
      if (signal.aborted) return { seq: op.seq, error: classify(signal.reason) };
      await this.repository.updateOperation(id, op.seq, {
        status: direction === 'forward' ? 'done' : 'rolled_back',
        attempts,
        finishedAt: this.clock.now(),
        error: null,
      });
      await this.log(id, 'info', `${label}: ok`);
      return undefined;
    } catch (err) {
      if (signal.aborted) return { seq: op.seq, error: classify(signal.reason) };
      const error = rootError(err);
      await this.repository.updateOperation(id, op.seq, {
        status: direction === 'forward' ? 'failed' : 'rollback_failed',
        attempts,
        finishedAt: this.clock.now(),
        error: toStored(error, direction, op.seq),
      });
      await this.log(id, 'error', `${label}: ${error.code}: ${error.message}`);
      return { seq: op.seq, error };
    } finally {
      if (!signal.aborted) await this.touch(id);
    }
  }

  /**
   * Undoes, in reverse order, every operation that did or may have done something (done,
   * interrupted, failed, or whose rollback failed before). Each rollback is retried; a rollback
   * that still fails is recorded and the rest still run.
   */
  private async rollbackAll(id: string, signal: AbortSignal): Promise<KeelError[]> {
    const ops = await this.repository.getOperations(id);
    const todo = ops
      .filter((o) => ['done', 'running', 'failed', 'rollback_failed'].includes(o.status))
      .sort((a, b) => b.seq - a.seq);
    const errors: KeelError[] = [];
    for (const op of todo) {
      if (op.rollback === null) {
        await this.repository.updateOperation(id, op.seq, { status: 'rolled_back' });
        continue;
      }
      const failure = await this.runOne(id, op, 'rollback', signal);
      if (signal.aborted) throw classify(signal.reason);
      if (failure !== undefined) errors.push(failure.error);
    }
    return errors;
  }

  private async touch(id: string): Promise<void> {
    await this.repository.updateGroup(id, { updatedAt: this.clock.now() });
  }

  private async log(id: string, level: 'info' | 'warn' | 'error', message: string): Promise<void> {
    await this.repository.addLog({ groupId: id, at: this.clock.now(), level, message });
  }

  private async require(id: string): Promise<GroupRecord> {
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
