/**
 * Operation groups: multi-step changes stored as data that run in order (or in parallel steps),
 * roll back in reverse on failure, pause, resume, stop, and recover after a crash.
 * @packageDocumentation
 */
export { GroupManager, DEFAULT_OPERATION_TIMEOUT_MS, type GroupManagerOptions } from './manager.js';
export {
  ExecutorRegistry,
  type Executor,
  type ExecutorContext,
  type ProgressReport,
  type CleanupCommand,
} from './executors.js';
export { GroupFailedError } from './group-failed-error.js';
export {
  TRANSITIONS,
  TERMINAL_STATUSES,
  ACTIVE_STATUSES,
  canTransition,
  assertTransition,
} from './status.js';
export {
  diagnoseRecord,
  failureClass,
  strategyFor,
  stuckReason,
  DEFAULT_STUCK_AFTER_MS,
} from './diagnose.js';
export { recoverGroups, type RecoverOptions } from './recovery.js';
export type { MetricsHelpers } from './metrics.js';
export {
  cleanupGroups,
  orphanedResources,
  type RetentionOptions,
  type RetentionReport,
  type RetentionStatus,
} from './retention.js';
export {
  groupsHealthCheck,
  type GroupsHealthCheck,
  type GroupsHealthOutcome,
  type GroupsHealthOptions,
  type GroupsHealthCounts,
} from './health-check.js';
export { reconcile, diff, type Difference, type ReconcileOptions, type DiffOptions } from './reconcile.js';
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
  StuckReason,
  OperationProgress,
  StuckMode,
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
  type TemporaryResource,
  type ResourceWithOwner,
  type OpenGroupRepositoryOptions,
  type StartupRetryOptions,
  type StartupHealth,
  type OpenAttempt,
} from '@keel/store';
