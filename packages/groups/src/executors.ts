import { keelError } from 'keel';

/** What an executor reports with {@link ExecutorContext.progress}. */
export interface ProgressReport {
  message?: string;
  /** Units done and expected (rows, bytes, files …). */
  done?: number;
  total?: number;
}

/** How a temporary resource is removed: an executor of the registry, run with `payload` as its forward. */
export interface CleanupCommand<P = unknown> {
  executor: string;
  payload: P;
}

/** What an executor is given for one call. */
export interface ExecutorContext {
  groupId: string;
  seq: number;
  target: string;
  /** 1 for the first attempt. */
  attempt: number;
  /**
   * Aborts when the operation's timeout passes, when a stop with rollback cancels it, or when this
   * process lost the group (to recovery, or another process after its lease expired). Honour it:
   * pass it to fetch, pg's query cancellation, streams.
   */
  signal: AbortSignal;
  /** The correlation id the operation runs under (also `correlationId()` inside the call). */
  correlationId: string | undefined;
  /**
   * Reports progress: the group counts as making progress, so a long operation that reports is
   * not found stuck. Writes at most once a second per operation; cheap to call per batch.
   */
  progress(report?: ProgressReport): Promise<void>;
  /**
   * Records a temporary resource this operation made (a scratch table, a snapshot) with the
   * command that removes it, so it is removed by `cleanup()` if the group ends (or its process
   * dies) without {@link releaseTemporary}. `name` is unique within the group.
   */
  registerTemporary(name: string, cleanup: CleanupCommand): Promise<void>;
  /** Forgets a temporary resource the operation removed itself; resolves with whether it was recorded. */
  releaseTemporary(name: string): Promise<boolean>;
}

/**
 * Carries out one kind of operation. Both directions must be idempotent: a crash can make
 * either run twice (use `IF NOT EXISTS`, `ON CONFLICT DO NOTHING`, keys derived from the group id and seq).
 */
export interface Executor<F = unknown, R = unknown> {
  forward(payload: F, ctx: ExecutorContext): Promise<void>;
  rollback?(payload: R, ctx: ExecutorContext): Promise<void>;
}

/** Executors by name, so that any process with the same registrations can run a stored group. */
export class ExecutorRegistry {
  private readonly executors = new Map<string, Executor>();

  /** Registers `executor` under `name`; throws if the name is taken. */
  register<F, R>(name: string, executor: Executor<F, R>): this {
    if (this.executors.has(name)) {
      throw keelError('INVALID_CONFIG', `an executor named "${name}" is already registered`, { name });
    }
    this.executors.set(name, executor);
    return this;
  }

  has(name: string): boolean {
    return this.executors.has(name);
  }

  /** The executor named `name`; throws GROUP_UNKNOWN_EXECUTOR (permanent) if none. */
  get(name: string): Executor {
    const executor = this.executors.get(name);
    if (executor === undefined) {
      throw keelError(
        'GROUP_UNKNOWN_EXECUTOR',
        `no executor named "${name}" is registered in this process; register it before running or rolling back the group`,
        { name, registered: [...this.executors.keys()] },
        { kind: 'permanent', stack: false },
      );
    }
    return executor;
  }

  names(): string[] {
    return [...this.executors.keys()];
  }
}
