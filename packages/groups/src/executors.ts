import { keelError } from 'keel';

/** What an executor is given for one call. */
export interface ExecutorContext {
  groupId: string;
  seq: number;
  target: string;
  /** 1 for the first attempt. */
  attempt: number;
  signal: AbortSignal;
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
