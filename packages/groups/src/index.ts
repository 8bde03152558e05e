/**
 * Operation groups: multi-step changes stored as data that run in order (or in parallel steps),
 * roll back in reverse on failure, pause, resume, stop, and recover after a crash.
 * @packageDocumentation
 */
export { GroupManager, type GroupManagerOptions } from './manager.js';
export { ExecutorRegistry, type Executor, type ExecutorContext } from './executors.js';
export { GroupFailedError } from './group-failed-error.js';
export {
  TRANSITIONS,
  TERMINAL_STATUSES,
  ACTIVE_STATUSES,
  canTransition,
  assertTransition,
} from './status.js';
export { diagnoseRecord, failureClass, strategyFor } from './diagnose.js';
export {
  recoverGroups,
  cleanupGroups,
  groupsHealthCheck,
  type RecoverOptions,
  type RetentionOptions,
  type RetentionReport,
  type GroupsHealthCheck,
  type GroupsHealthOutcome,
} from './recovery.js';
export { reconcile, type Difference, type ReconcileOptions } from './reconcile.js';
export type {
  OperationSpec,
  StepSpec,
  GroupDefinition,
  RetryRunner,
  RunOutcome,
  GroupProgress,
  RecoveryStrategy,
  FailureClass,
  Diagnosis,
  RecoveryAction,
  RecoveryReport,
} from './types.js';
export {
  openGroupRepository,
  sqliteGroupRepository,
  postgresGroupRepository,
  type GroupRepository,
  type GroupRecord,
  type OperationRecord,
  type GroupStatus,
  type OperationStatus,
  type StopMode,
  type FailureMode,
  type StoredError,
  type GroupLogEntry,
  type StoreAccess,
} from '@keel/store';
