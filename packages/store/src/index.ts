export { PRIVATE_FILE_MODE, PRIVATE_DIR_MODE, warnFileModeFixed } from './private-files.js';
export { STORE_ACCESSES, type StoreAccess, type NotAStoreReason } from './access.js';

// Operation groups' persistence (src/groups).
export type {
  GroupStatus,
  OperationStatus,
  StopMode,
  FailureMode,
  StuckMode,
  OperationProgress,
  TemporaryResource,
  ResourceWithOwner,
  StoredError,
  GroupRecord,
  OperationRecord,
  GroupLogEntry,
  GroupPatch,
  OperationPatch,
  NewOperation,
  GroupRepository,
} from './groups-schema.js';
export { SqlGroupRepository, GROUPS_MIGRATIONS, type GroupSqlDriver } from './groups-sql.js';
export { sqliteGroupRepository, type SqliteGroupOptions } from './groups-sqlite.js';
export { postgresGroupRepository, type PostgresGroupOptions } from './groups-postgres.js';
export { openGroupRepository, type OpenGroupRepositoryOptions } from './groups-open.js';
export {
  openWithRetry,
  startupSettings,
  type StartupRetryOptions,
  type StartupHealth,
  type OpenAttempt,
  type OpenRetrySettings,
} from './open-retry.js';

// The persistent queue (src/queue).
export {
  QUEUE_ITEM_STATES,
  type QueueStore,
  type QueueRow,
  type NewQueueRow,
  type QueueItemState,
  type QueueCounts,
  type ClaimRef,
  type EnqueueResult,
} from './queue-store.js';
export { SqliteQueueStore, type SqliteQueueStoreOptions } from './queue-sqlite.js';
export { PostgresQueueStore, redactPostgresUrl, type PostgresQueueStoreOptions } from './queue-postgres.js';
export { openQueueStore, type QueueStoreOptions } from './queue-open.js';
export { SQLITE_QUEUE_MIGRATIONS, POSTGRES_QUEUE_MIGRATIONS } from './queue-schema.js';
