import { classify, keelError, withCorrelation, type Clock, type KeelError } from 'keel';
import type { GroupRecord, GroupRepository, GroupStatus, OperationRecord, StoredError } from '@keel/store';
import type { CleanupCommand, ExecutorContext, ExecutorRegistry, ProgressReport } from './executors.js';
import { GroupFailedError } from './group-failed-error.js';
import type { RetryRunner, RunOutcome } from './types.js';

/** What a {@link GroupRun} needs from its manager. */
export interface RunHost {
  readonly repository: GroupRepository;
  readonly executors: ExecutorRegistry;
  readonly clock: Clock;
  readonly runWithRetry: RetryRunner;
  transition(
    id: string,
    to: GroupStatus,
    extra?: Partial<Pick<GroupRecord, 'startedAt' | 'finishedAt' | 'stopMode' | 'lastError'>>,
  ): Promise<void>;
  log(id: string, level: 'info' | 'warn' | 'error', message: string): Promise<void>;
  require(id: string): Promise<GroupRecord>;
}

/** How one run of an operation ended. */
type OperationOutcome =
  | { outcome: 'ok' }
  | { outcome: 'failed'; seq: number; error: KeelError }
  /** A stop with rollback cancelled it: recorded as interrupted, rolled back with the rest. */
  | { outcome: 'cancelled' }
  /** This process lost the group: nothing was recorded. */
  | { outcome: 'lost'; error: KeelError };

/** Progress reports of one operation are written at most this often. */
const PROGRESS_WRITE_EVERY_MS = 1000;
const MAX_PROGRESS_MESSAGE = 500;
const MAX_RESOURCE_NAME = 200;

export const toStored = (err: KeelError, phase: 'forward' | 'rollback', seq: number): StoredError => ({
  code: err.code,
  kind: err.kind,
  message: err.message,
  retryable: err.retryable,
  phase,
  seq,
  ...(err.correlationId === undefined ? {} : { correlationId: err.correlationId }),
});

/** The error that counts: the cause of RETRIES_EXHAUSTED, so diagnosis sees the real failure. */
function rootError(err: unknown): KeelError {
  const e = classify(err);
  return e.code === 'RETRIES_EXHAUSTED' && e.cause !== undefined ? classify(e.cause) : e;
}

/** A promise that rejects with the signal's reason when it aborts (never resolves). */
function rejectOnAbort(signal: AbortSignal): Promise<never> {
  const p = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason as Error);
    else signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });
  p.catch(() => undefined);
  return p;
}

function cleanReport(report: ProgressReport): ProgressReport {
  const out: ProgressReport = {};
  if (typeof report.message === 'string') out.message = report.message.slice(0, MAX_PROGRESS_MESSAGE);
  for (const key of ['done', 'total'] as const) {
    const v = report[key];
    if (typeof v === 'number' && Number.isFinite(v)) out[key] = v;
  }
  return out;
}

/**
 * One process working on one group until it settles: runs operations step by step, honours pause
 * and stop requests, rolls back. Three things end an operation early: its timeout, a stop with
 * rollback (which cancels the step in flight and rolls back, instead of waiting for it), and the
 * loss of the group to another process or to recovery (then nothing is recorded). An executor that
 * ignores its signal is abandoned, not awaited.
 */
export class GroupRun {
  private readonly lease = new AbortController();
  private step: AbortController | undefined;
  private readonly errors: KeelError[] = [];
  private readonly progressWritten = new Map<number, number>();

  constructor(
    private readonly host: RunHost,
    readonly id: string,
  ) {}

  /** This process no longer owns the group: stop at once without recording anything. */
  lose(reason: KeelError): void {
    if (!this.lease.signal.aborted) this.lease.abort(reason);
  }

  /** True once {@link lose} was called. */
  get lost(): boolean {
    return this.lease.signal.aborted;
  }

  /** A stop with rollback was requested: cancels the operations in flight, then the loop rolls back. */
  cancelStep(reason: KeelError): void {
    this.step?.abort(reason);
  }

  async loop(): Promise<RunOutcome> {
    const { id, host } = this;
    const errors = this.errors;
    for (;;) {
      this.throwIfLost();
      const group = await host.require(id);
      switch (group.status) {
        case 'running': {
          const ops = await host.repository.getOperations(id);
          const open = ops.filter(
            (o) => o.status === 'pending' || o.status === 'running' || o.status === 'failed',
          );
          if (open.length === 0) {
            await host.transition(id, 'completed', { finishedAt: host.clock.now() });
            return { id, status: 'completed' };
          }
          const step = Math.min(...open.map((o) => o.step));
          const failures = await this.runStep(
            group,
            open.filter((o) => o.step === step),
          );
          this.throwIfLost();
          if (failures.length > 0) {
            errors.push(...failures.map((f) => f.error));
            const first = failures[0];
            const lastError = first === undefined ? null : toStored(first.error, 'forward', first.seq);
            // A pause or stop may have raced the failure: a failure still wins over them.
            const target = group.onFailure === 'stop' ? 'failed' : 'rolling_back';
            const current = await host.require(id);
            if (current.status === 'paused') await host.transition(id, 'running');
            else if (current.status === 'stopping' && target === 'failed') {
              await host.transition(id, 'rolling_back', { lastError });
              break;
            }
            await host.transition(id, target, {
              lastError,
              ...(target === 'failed' ? { finishedAt: host.clock.now() } : {}),
            });
            if (target === 'failed') throw new GroupFailedError(id, 'failed', errors);
          }
          break;
        }
        case 'stopping':
          if (group.stopMode === 'rollback') {
            await host.transition(id, 'rolling_back');
            break;
          }
          await host.transition(id, 'stopped', { finishedAt: host.clock.now() });
          return { id, status: 'stopped' };
        case 'rolling_back': {
          const rollbackErrors = await this.rollbackAll(group);
          errors.push(...rollbackErrors);
          const status = rollbackErrors.length > 0 ? 'rollback_failed' : 'rolled_back';
          const lastRollback = rollbackErrors[0];
          await host.transition(id, status, {
            finishedAt: host.clock.now(),
            ...(lastRollback === undefined ? {} : { lastError: toStored(lastRollback, 'rollback', -1) }),
          });
          if (errors.length > 0) throw new GroupFailedError(id, status, errors);
          return { id, status };
        }
        default:
          return { id, status: group.status };
      }
    }
  }

  private throwIfLost(): void {
    if (this.lease.signal.aborted) throw classify(this.lease.signal.reason);
  }

  /** Runs the operations of one step in parallel; a stop with rollback cancels them all. */
  private async runStep(
    group: GroupRecord,
    ops: readonly OperationRecord[],
  ): Promise<{ seq: number; error: KeelError }[]> {
    const step = new AbortController();
    this.step = step;
    try {
      const results = await Promise.all(ops.map((op) => this.runOne(group, op, 'forward', step.signal)));
      return results.filter((r) => r.outcome === 'failed');
    } finally {
      this.step = undefined;
    }
  }

  private async runOne(
    group: GroupRecord,
    op: OperationRecord,
    direction: 'forward' | 'rollback',
    stepSignal: AbortSignal | undefined,
  ): Promise<OperationOutcome> {
    const { id, host } = this;
    const label = `${direction} ${String(op.seq)} ${op.executor} ${op.target}`;
    let attempts = op.attempts;
    if (direction === 'forward') {
      await host.repository.updateOperation(id, op.seq, {
        status: 'running',
        startedAt: host.clock.now(),
        error: null,
        progress: null,
      });
      await this.touch();
    }
    const timeout = new AbortController();
    const timer =
      op.timeoutMs === null
        ? undefined
        : host.clock.setTimer(op.timeoutMs, () => {
            timeout.abort(
              keelError(
                'TIMEOUT',
                `${label} did not finish within its timeout of ${String(op.timeoutMs)} ms; it was cancelled`,
                { groupId: id, seq: op.seq, timeoutMs: op.timeoutMs },
                { stack: false },
              ),
            );
          });
    const signal = AbortSignal.any(
      stepSignal === undefined
        ? [this.lease.signal, timeout.signal]
        : [this.lease.signal, timeout.signal, stepSignal],
    );
    const correlationId = op.correlationId ?? group.correlationId ?? undefined;
    try {
      const executor = host.executors.get(op.executor);
      const rollbackFn = executor.rollback?.bind(executor);
      const attempt = async (n: number): Promise<void> => {
        attempts++;
        const ctx = this.context(op, n, signal, correlationId);
        if (direction === 'forward') await executor.forward(op.forward, ctx);
        else if (rollbackFn !== undefined) await rollbackFn(op.rollback, ctx);
      };
      const run = host.runWithRetry(
        (ctx) =>
          correlationId === undefined
            ? attempt(ctx.attempt)
            : withCorrelation(correlationId, () => attempt(ctx.attempt)),
        signal,
      );
      // An executor that ignores its signal is not waited for once the signal aborts.
      await Promise.race([run, rejectOnAbort(signal)]);
      if (this.lease.signal.aborted) return { outcome: 'lost', error: classify(this.lease.signal.reason) };
      await host.repository.updateOperation(id, op.seq, {
        status: direction === 'forward' ? 'done' : 'rolled_back',
        attempts,
        finishedAt: host.clock.now(),
        error: null,
      });
      await host.log(id, 'info', `${label}: ok`);
      return { outcome: 'ok' };
    } catch (err) {
      // A worker that lost the group must not record anything: it belongs to another now.
      if (this.lease.signal.aborted) return { outcome: 'lost', error: classify(this.lease.signal.reason) };
      const cancelled = stepSignal?.aborted === true && !timeout.signal.aborted;
      const error = cancelled
        ? classify(stepSignal.reason)
        : timeout.signal.aborted
          ? classify(timeout.signal.reason)
          : rootError(err);
      await host.repository.updateOperation(id, op.seq, {
        status: direction === 'forward' ? 'failed' : 'rollback_failed',
        attempts,
        finishedAt: host.clock.now(),
        error: toStored(error, direction, op.seq),
      });
      await host.log(id, cancelled ? 'warn' : 'error', `${label}: ${error.code}: ${error.message}`);
      return cancelled ? { outcome: 'cancelled' } : { outcome: 'failed', seq: op.seq, error };
    } finally {
      timer?.cancel();
      this.progressWritten.delete(op.seq);
      if (!this.lease.signal.aborted) await this.touch();
    }
  }

  private context(
    op: OperationRecord,
    attempt: number,
    signal: AbortSignal,
    correlationId: string | undefined,
  ): ExecutorContext {
    const { id, host } = this;
    return {
      groupId: id,
      seq: op.seq,
      target: op.target,
      attempt,
      signal,
      correlationId,
      progress: async (report: ProgressReport = {}) => {
        if (signal.aborted) return;
        const now = host.clock.now();
        if (now - (this.progressWritten.get(op.seq) ?? Number.NEGATIVE_INFINITY) < PROGRESS_WRITE_EVERY_MS)
          return;
        this.progressWritten.set(op.seq, now);
        await host.repository.updateGroup(id, { progressAt: now, updatedAt: now });
        await host.repository.updateOperation(id, op.seq, { progress: { at: now, ...cleanReport(report) } });
      },
      registerTemporary: async (name: string, cleanup: CleanupCommand) => {
        if (typeof name !== 'string' || name === '' || name.length > MAX_RESOURCE_NAME)
          throw keelError(
            'INVALID_INPUT',
            `registerTemporary: name must be a string of 1 to ${String(MAX_RESOURCE_NAME)} characters`,
          );
        if (typeof cleanup.executor !== 'string' || !host.executors.has(cleanup.executor))
          throw keelError(
            'INVALID_INPUT',
            `registerTemporary ${name}: the cleanup executor ${JSON.stringify(cleanup.executor)} is not registered`,
            { registered: host.executors.names() },
          );
        await host.repository.addResource({
          groupId: id,
          seq: op.seq,
          name,
          cleanup: { executor: cleanup.executor, payload: cleanup.payload ?? null },
          registeredAt: host.clock.now(),
        });
        await host.log(id, 'info', `operation ${String(op.seq)} registered temporary resource ${name}`);
      },
      releaseTemporary: (name: string) => host.repository.removeResource(id, name),
    };
  }

  /**
   * Undoes, in reverse order, every operation that did or may have done something (done,
   * interrupted, failed, cancelled, or whose rollback failed before). Each rollback is retried; a
   * rollback that still fails is recorded and the rest still run.
   */
  private async rollbackAll(group: GroupRecord): Promise<KeelError[]> {
    const ops = await this.host.repository.getOperations(this.id);
    const todo = ops
      .filter((o) => ['done', 'running', 'failed', 'rollback_failed'].includes(o.status))
      .sort((a, b) => b.seq - a.seq);
    const errors: KeelError[] = [];
    for (const op of todo) {
      if (op.rollback === null) {
        await this.host.repository.updateOperation(this.id, op.seq, { status: 'rolled_back' });
        continue;
      }
      const result = await this.runOne(group, op, 'rollback', undefined);
      this.throwIfLost();
      if (result.outcome === 'failed') errors.push(result.error);
    }
    return errors;
  }

  private async touch(): Promise<void> {
    const now = this.host.clock.now();
    await this.host.repository.updateGroup(this.id, { updatedAt: now, progressAt: now });
  }
}
