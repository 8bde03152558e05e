// Operation groups' persistence (src/groups).
export type {
  GroupStatus,
  OperationStatus,
  StopMode,
  FailureMode,
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
export { openGroupRepository } from './groups-open.js';

// The persistent queue (src/queue).
export {
  SqliteQueueStore,
  type QueueRow,
  type NewQueueRow,
  type SqliteQueueStoreOptions,
} from './queue-sqlite.js';
