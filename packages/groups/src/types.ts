import type { KeelError, PolicyFn } from 'keel';
import type {
  FailureMode,
  GroupRecord,
  GroupStatus,
  OperationProgress,
  OperationRecord,
  StuckMode,
} from '@keel/store';

/** One operation as declared: which executor, on what, with which payloads. */
export interface OperationSpec<F = unknown, R = unknown> {
  executor: string;
  /** What the operation acts on, for people reading progress and logs (e.g. `node4/shard_7`). */
  target: string;
  forward: F;
  /** What undoing it takes; omit when there is nothing to undo. */
  rollback?: R;
  /**
   * How long one run of the operation (all its attempts) may take, in ms, forward or rollback;
   * then its signal aborts and it fails with TIMEOUT. Default: the group's `operationTimeoutMs`.
   */
  timeoutMs?: number;
}

/** A step: one operation, or several that run in parallel. */
export type StepSpec = OperationSpec | readonly OperationSpec[];

/** A group as declared to {@link GroupManager.create}. */
export interface GroupDefinition {
  name: string;
  steps: readonly StepSpec[];
  /** `rollback` (default): undo completed operations on failure; `stop`: leave the group `failed`. */
  onFailure?: FailureMode;
  /** Id to use (default: a random UUID). Creating an existing id is refused with CONFLICT. */
  id?: string;
  /** Timeout of each operation that sets none (default: the manager's `operationTimeoutMs`, 30 min). */
  operationTimeoutMs?: number;
  /** What recovery does when the group is stuck: `retry` (default), `rollback` or `manual`. */
  onStuck?: StuckMode;
}

/** Runs one attempt sequence of an operation; the default is keel's retry policy. */
export type RetryRunner = <T>(fn: PolicyFn<T>, signal?: AbortSignal) => Promise<T>;

/** How a run of a group ended, as far as the caller is concerned. */
export interface RunOutcome {
  id: string;
  status: GroupStatus;
}

/** A snapshot of a group's progress. */
export interface GroupProgress {
  id: string;
  name: string;
  status: GroupStatus;
  done: number;
  total: number;
  /** Operations running now (or interrupted by a crash), with their last progress report. */
  current: {
    seq: number;
    executor: string;
    target: string;
    startedAt: number | null;
    timeoutMs: number | null;
    progress: OperationProgress | null;
  }[];
  startedAt: number | null;
  /** Last time anything happened, lease heartbeats included. */
  lastActivityAt: number;
  /** Last time the group made progress (what stuck detection reads). */
  lastProgressAt: number;
  finishedAt: number | null;
}

/** A recovery strategy, chosen from the kind of the last error. */
export type RecoveryStrategy =
  | 'retry-with-backoff'
  | 'check-and-retry'
  | 'check-cluster-and-retry'
  | 'reset-and-retry'
  | 'roll-back'
  | 'continue-rollback'
  | 'finish-stop'
  | 'manual'
  | 'none';

/** The error families that decide a strategy. */
export type FailureClass = 'network' | 'timeout' | 'resource' | 'cluster' | 'state' | 'logic' | 'none';

/**
 * Why an active group is stuck: its worker's lease expired (the worker died or froze), or it made
 * no progress for `stuckAfterMs` although its worker is alive (an operation hangs).
 */
export type StuckReason = 'lease-expired' | 'no-progress';

/** What {@link GroupManager.diagnose} finds. */
export interface Diagnosis {
  id: string;
  status: GroupStatus;
  /** `false`, or why the group is stuck. */
  stuck: false | StuckReason;
  lastError: GroupRecord['lastError'];
  /** The family of the last error; `timeout` for a group stuck without progress and without an error. */
  errorKind: FailureClass;
  sinceLastActivityMs: number;
  sinceLastProgressMs: number;
  onStuck: StuckMode;
  strategy: RecoveryStrategy;
  /** One sentence for a person: what happened and what recovery will do. */
  summary: string;
  recoverAttempts: number;
}

/** What {@link GroupManager.recover} did to one group. */
export type RecoveryAction =
  | { id: string; action: 'recovered'; strategy: RecoveryStrategy; status: GroupStatus }
  | { id: string; action: 'failed-again'; strategy: RecoveryStrategy; status: GroupStatus; error: KeelError }
  | { id: string; action: 'skipped'; strategy: RecoveryStrategy; reason: string };

/** The report of one {@link GroupManager.recover} pass. */
export interface RecoveryReport {
  examined: number;
  actions: RecoveryAction[];
}

export type { GroupRecord, OperationRecord, OperationProgress, StuckMode };
