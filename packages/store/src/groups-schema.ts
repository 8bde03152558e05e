/**
 * The persisted shape of operation groups and the {@link GroupRepository} interface that the
 * SQLite and PostgreSQL stores implement. Groups and operations are plain data so that any
 * process can finish or roll back a group after a crash.
 */

/** Every status a group can be in. */
export type GroupStatus =
  | 'pending'
  | 'running'
  | 'paused'
  | 'stopping'
  | 'stopped'
  | 'completed'
  | 'failed'
  | 'rolling_back'
  | 'rolled_back'
  | 'rollback_failed';

/** Every status an operation can be in. */
export type OperationStatus =
  'pending' | 'running' | 'done' | 'failed' | 'rolled_back' | 'rollback_failed' | 'skipped';

/** How a stop was asked for: finish the current operation and stop, or stop and roll back. */
export type StopMode = 'graceful' | 'rollback';

/** What to do when an operation fails for good: roll back the group (default) or leave it `failed`. */
export type FailureMode = 'rollback' | 'stop';

/**
 * What recovery does with a stuck group (its worker died, or it made no progress for too long):
 * `retry` (default) runs the interrupted operation again, `rollback` rolls the group back,
 * `manual` leaves it for a person.
 */
export type StuckMode = 'retry' | 'rollback' | 'manual';

/** The last progress an executor reported for its operation. */
export interface OperationProgress {
  /** Epoch ms of the report. */
  at: number;
  message?: string;
  /** Units done and expected (rows, bytes, files …), when the executor counts them. */
  done?: number;
  total?: number;
}

/** A temporary resource an operation made (a scratch table, a snapshot, a temp file) and how to remove it. */
export interface TemporaryResource {
  groupId: string;
  /** The operation that registered it. */
  seq: number;
  /** Unique within the group, e.g. `tmp_shard_7_copy`. */
  name: string;
  /** An executor of the registry whose `forward(payload)` removes the resource (idempotently). */
  cleanup: { executor: string; payload: unknown };
  registeredAt: number;
}

/** An error as persisted: enough to diagnose and choose a recovery strategy. */
export interface StoredError {
  code: string;
  kind: string;
  message: string;
  retryable: boolean;
  /** `forward` or `rollback`, and which operation, when the error came from one. */
  phase?: 'forward' | 'rollback';
  seq?: number;
  /** The correlation id the operation ran under. */
  correlationId?: string;
}

/** One persisted group. Times are epoch ms. */
export interface GroupRecord {
  id: string;
  name: string;
  status: GroupStatus;
  onFailure: FailureMode;
  stopMode: StopMode | null;
  createdAt: number;
  startedAt: number | null;
  /** Last time anything happened to the group (an operation started or ended, a status changed, a heartbeat). */
  updatedAt: number;
  finishedAt: number | null;
  leaseOwner: string | null;
  leaseExpiresAt: number | null;
  lastError: StoredError | null;
  recoverAttempts: number;
  /**
   * Last time the group made progress: a status change, an operation that started or ended, or a
   * progress report of an executor. Lease heartbeats do not count, so a live worker whose operation
   * hangs is found stuck.
   */
  progressAt: number | null;
  onStuck: StuckMode;
  /** Timeout of its operations that set none of their own, in ms (null: the manager's default). */
  operationTimeoutMs: number | null;
  /** The correlation id of the request that created the group (restored when it runs). */
  correlationId: string | null;
}

/** One persisted operation of a group. */
export interface OperationRecord {
  groupId: string;
  /** Position in the group, from 0. */
  seq: number;
  /** Operations with the same step run in parallel; steps run in ascending order. */
  step: number;
  executor: string;
  target: string;
  forward: unknown;
  /** `null` when the operation has nothing to undo. */
  rollback: unknown;
  status: OperationStatus;
  attempts: number;
  error: StoredError | null;
  startedAt: number | null;
  finishedAt: number | null;
  /** How long one run of the operation (all its attempts) may take, in ms; null: no limit. */
  timeoutMs: number | null;
  /** The executor's last progress report. */
  progress: OperationProgress | null;
  /** The correlation id of the request that added the operation (restored when it runs). */
  correlationId: string | null;
}

/** One line of a group's log. */
export interface GroupLogEntry {
  groupId: string;
  at: number;
  level: 'info' | 'warn' | 'error';
  message: string;
}

/** Columns of a group that may be changed by {@link GroupRepository.updateGroup}. */
export type GroupPatch = Partial<
  Pick<
    GroupRecord,
    | 'status'
    | 'stopMode'
    | 'startedAt'
    | 'updatedAt'
    | 'finishedAt'
    | 'leaseOwner'
    | 'leaseExpiresAt'
    | 'lastError'
    | 'recoverAttempts'
    | 'progressAt'
  >
>;

/** Columns of an operation that may be changed by {@link GroupRepository.updateOperation}. */
export type OperationPatch = Partial<
  Pick<OperationRecord, 'status' | 'attempts' | 'error' | 'startedAt' | 'finishedAt' | 'progress'>
>;

/** An operation to insert: its group and seq are given by the repository call. */
export type NewOperation = Pick<
  OperationRecord,
  'step' | 'executor' | 'target' | 'forward' | 'rollback' | 'timeoutMs' | 'correlationId'
>;

/** A temporary resource with the status of the group that owns it (null: the group was deleted). */
export interface ResourceWithOwner extends TemporaryResource {
  groupStatus: GroupStatus | null;
}

/**
 * Durable storage of groups, their operations and logs. Both implementations make every call
 * atomic; `updateGroup` with `expect` is a compare-and-set on the status, which is how
 * transitions stay valid when several processes act on one group.
 */
export interface GroupRepository {
  /** `sqlite` or `postgres`. */
  readonly kind: 'sqlite' | 'postgres';
  /** Where the store is, safe to print: a file path, or a PostgreSQL URL without credentials. */
  readonly location: string;
  /** Creates the tables if needed (versioned; safe to call at every start). */
  migrate(): Promise<void>;
  insertGroup(group: GroupRecord, operations: readonly NewOperation[]): Promise<void>;
  /** Appends operations after the existing ones; returns their seqs. */
  appendOperations(groupId: string, operations: readonly NewOperation[]): Promise<number[]>;
  getGroup(id: string): Promise<GroupRecord | undefined>;
  listGroups(filter?: { statuses?: readonly GroupStatus[]; limit?: number }): Promise<GroupRecord[]>;
  /** How many groups are in each status (statuses without groups are absent). */
  countByStatus(): Promise<Partial<Record<GroupStatus, number>>>;
  getOperations(groupId: string): Promise<OperationRecord[]>;
  /** Applies the patch; with `expect`, only if the status is one of those. Returns whether a row changed. */
  updateGroup(id: string, patch: GroupPatch, expect?: readonly GroupStatus[]): Promise<boolean>;
  updateOperation(groupId: string, seq: number, patch: OperationPatch): Promise<void>;
  /** Takes the lease if it is free, expired or already `owner`'s. */
  acquireLease(id: string, owner: string, nowMs: number, untilMs: number): Promise<boolean>;
  /**
   * Takes the lease from `from` (compare-and-set on the holder, expired or not): how recovery takes
   * a group whose live worker made no progress. The old holder's next heartbeat finds it lost.
   */
  takeOverLease(id: string, owner: string, from: string | null, untilMs: number): Promise<boolean>;
  /** Extends the lease if `owner` still holds it. */
  renewLease(id: string, owner: string, nowMs: number, untilMs: number): Promise<boolean>;
  releaseLease(id: string, owner: string): Promise<void>;
  addLog(entry: GroupLogEntry): Promise<void>;
  getLogs(groupId: string): Promise<GroupLogEntry[]>;
  /** Deletes groups (with operations and logs) in `status` finished before `beforeMs`. */
  deleteGroups(status: GroupStatus, beforeMs: number): Promise<number>;
  /** Deletes log lines older than `beforeMs`. */
  deleteLogs(beforeMs: number): Promise<number>;
  /** Records a temporary resource (replacing one of the same group and name). */
  addResource(resource: TemporaryResource): Promise<void>;
  /** Forgets a temporary resource (it was removed); resolves with whether it was recorded. */
  removeResource(groupId: string, name: string): Promise<boolean>;
  /** Temporary resources registered before `beforeMs` (all when omitted), oldest first, at most `limit` (default 1000). */
  listResources(filter?: { beforeMs?: number; limit?: number }): Promise<ResourceWithOwner[]>;
  close(): Promise<void>;
}
