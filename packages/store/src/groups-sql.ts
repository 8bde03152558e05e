import type {
  GroupLogEntry,
  GroupPatch,
  GroupRecord,
  GroupRepository,
  GroupStatus,
  NewOperation,
  OperationPatch,
  OperationRecord,
  ResourceWithOwner,
  TemporaryResource,
} from './groups-schema.js';

/**
 * The few things {@link SqlGroupRepository} needs from a database: queries written with `?`
 * placeholders, and a transaction. The SQLite and PostgreSQL drivers provide them.
 */
export interface GroupSqlDriver {
  readonly kind: 'sqlite' | 'postgres';
  all(sql: string, params?: readonly unknown[]): Promise<Record<string, unknown>[]>;
  /** Runs a statement; resolves with the number of rows changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>;
  /** Runs `fn` in one transaction (serialised per group on PostgreSQL by row locks). */
  transaction<T>(fn: (tx: GroupSqlDriver) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/**
 * The versions of the groups tables; the same SQL runs on SQLite and PostgreSQL. Never edit a
 * released version: add the next one.
 */
export const GROUPS_MIGRATIONS: readonly { version: number; statements: readonly string[] }[] = [
  {
    version: 1,
    statements: [
      `CREATE TABLE IF NOT EXISTS keel_groups (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, on_failure TEXT NOT NULL,
        stop_mode TEXT, created_at BIGINT NOT NULL, started_at BIGINT, updated_at BIGINT NOT NULL,
        finished_at BIGINT, lease_owner TEXT, lease_expires_at BIGINT, last_error TEXT,
        recover_attempts INTEGER NOT NULL DEFAULT 0)`,
      `CREATE INDEX IF NOT EXISTS keel_groups_status ON keel_groups (status, updated_at)`,
      `CREATE TABLE IF NOT EXISTS keel_group_operations (
        group_id TEXT NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL, executor TEXT NOT NULL,
        target TEXT NOT NULL, forward TEXT, rollback TEXT, status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, error TEXT, started_at BIGINT, finished_at BIGINT,
        PRIMARY KEY (group_id, seq))`,
      `CREATE TABLE IF NOT EXISTS keel_group_logs (
        group_id TEXT NOT NULL, at BIGINT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL)`,
      `CREATE INDEX IF NOT EXISTS keel_group_logs_group ON keel_group_logs (group_id, at)`,
      `CREATE INDEX IF NOT EXISTS keel_group_logs_at ON keel_group_logs (at)`,
    ],
  },
  {
    // Stuck by progress, operation timeouts, correlation ids, temporary resources.
    version: 2,
    statements: [
      `ALTER TABLE keel_groups ADD COLUMN progress_at BIGINT`,
      `ALTER TABLE keel_groups ADD COLUMN on_stuck TEXT`,
      `ALTER TABLE keel_groups ADD COLUMN correlation_id TEXT`,
      `ALTER TABLE keel_groups ADD COLUMN operation_timeout_ms BIGINT`,
      `ALTER TABLE keel_group_operations ADD COLUMN timeout_ms BIGINT`,
      `ALTER TABLE keel_group_operations ADD COLUMN progress TEXT`,
      `ALTER TABLE keel_group_operations ADD COLUMN correlation_id TEXT`,
      `CREATE TABLE IF NOT EXISTS keel_group_resources (
        group_id TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL, cleanup_executor TEXT NOT NULL,
        cleanup_payload TEXT, registered_at BIGINT NOT NULL, PRIMARY KEY (group_id, name))`,
      `CREATE INDEX IF NOT EXISTS keel_group_resources_at ON keel_group_resources (registered_at)`,
    ],
  },
];

const GROUP_COLUMNS: Record<keyof GroupPatch, string> = {
  status: 'status',
  stopMode: 'stop_mode',
  startedAt: 'started_at',
  updatedAt: 'updated_at',
  finishedAt: 'finished_at',
  leaseOwner: 'lease_owner',
  leaseExpiresAt: 'lease_expires_at',
  lastError: 'last_error',
  recoverAttempts: 'recover_attempts',
  progressAt: 'progress_at',
};

const OPERATION_COLUMNS: Record<keyof OperationPatch, string> = {
  status: 'status',
  attempts: 'attempts',
  error: 'error',
  startedAt: 'started_at',
  finishedAt: 'finished_at',
  progress: 'progress',
};

const JSON_FIELDS = new Set(['lastError', 'error', 'progress']);
const STUCK_MODES = new Set(['retry', 'rollback', 'manual']);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));
const json = (v: unknown): unknown =>
  v === null || v === undefined ? null : (JSON.parse(text(v)) as unknown);
const encode = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));

function toGroup(r: Record<string, unknown>): GroupRecord {
  return {
    id: String(r.id),
    name: String(r.name),
    status: String(r.status) as GroupStatus,
    onFailure: r.on_failure === 'stop' ? 'stop' : 'rollback',
    stopMode: r.stop_mode === 'graceful' || r.stop_mode === 'rollback' ? r.stop_mode : null,
    createdAt: Number(r.created_at),
    startedAt: num(r.started_at),
    updatedAt: Number(r.updated_at),
    finishedAt: num(r.finished_at),
    leaseOwner: typeof r.lease_owner === 'string' ? r.lease_owner : null,
    leaseExpiresAt: num(r.lease_expires_at),
    lastError: json(r.last_error) as GroupRecord['lastError'],
    recoverAttempts: Number(r.recover_attempts),
    progressAt: num(r.progress_at),
    onStuck: STUCK_MODES.has(String(r.on_stuck)) ? (r.on_stuck as GroupRecord['onStuck']) : 'retry',
    operationTimeoutMs: num(r.operation_timeout_ms),
    correlationId: str(r.correlation_id),
  };
}

function toOperation(r: Record<string, unknown>): OperationRecord {
  return {
    groupId: String(r.group_id),
    seq: Number(r.seq),
    step: Number(r.step),
    executor: String(r.executor),
    target: String(r.target),
    forward: json(r.forward),
    rollback: json(r.rollback),
    status: String(r.status) as OperationRecord['status'],
    attempts: Number(r.attempts),
    error: json(r.error) as OperationRecord['error'],
    startedAt: num(r.started_at),
    finishedAt: num(r.finished_at),
    timeoutMs: num(r.timeout_ms),
    progress: json(r.progress) as OperationRecord['progress'],
    correlationId: str(r.correlation_id),
  };
}

function toResource(r: Record<string, unknown>): ResourceWithOwner {
  return {
    groupId: String(r.group_id),
    seq: Number(r.seq),
    name: String(r.name),
    cleanup: { executor: String(r.cleanup_executor), payload: json(r.cleanup_payload) },
    registeredAt: Number(r.registered_at),
    groupStatus: typeof r.group_status === 'string' ? (r.group_status as GroupStatus) : null,
  };
}

function setClause(
  patch: Record<string, unknown>,
  columns: Record<string, string>,
): { sql: string; params: unknown[] } {
  const parts: string[] = [];
  const params: unknown[] = [];
  for (const [key, value] of Object.entries(patch)) {
    const column = columns[key];
    if (column === undefined || value === undefined) continue;
    parts.push(`${column} = ?`);
    params.push(JSON_FIELDS.has(key) ? encode(value) : value);
  }
  return { sql: parts.join(', '), params };
}

/** A {@link GroupRepository} over any {@link GroupSqlDriver}. */
export class SqlGroupRepository implements GroupRepository {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * @param location where the store is, safe to print (a file path, or a PostgreSQL URL without
   *   credentials): named in errors.
   */
  constructor(
    private readonly db: GroupSqlDriver,
    readonly location: string,
  ) {
    this.kind = db.kind;
  }

  /** The schema version applied to this store; 0 when it holds no keel groups tables. */
  async schemaVersion(): Promise<number> {
    const exists =
      this.db.kind === 'sqlite'
        ? `SELECT name AS t FROM sqlite_master WHERE type = 'table' AND name = 'keel_groups_schema'`
        : `SELECT to_regclass('keel_groups_schema')::text AS t`;
    const found = await this.db.all(exists);
    if (found[0]?.t === undefined || found[0].t === null) return 0;
    const rows = await this.db.all(`SELECT MAX(version) AS v FROM keel_groups_schema`);
    return Number(rows[0]?.v ?? 0);
  }

  async migrate(): Promise<void> {
    await this.db.run(
      `CREATE TABLE IF NOT EXISTS keel_groups_schema (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`,
    );
    const rows = await this.db.all(`SELECT MAX(version) AS v FROM keel_groups_schema`);
    const current = Number(rows[0]?.v ?? 0);
    for (const migration of GROUPS_MIGRATIONS) {
      if (migration.version <= current) continue;
      await this.db.transaction(async (tx) => {
        for (const statement of migration.statements) await tx.run(statement);
        await tx.run(`INSERT INTO keel_groups_schema (version, applied_at) VALUES (?, ?)`, [
          migration.version,
          Date.now(),
        ]);
      });
    }
  }

  async insertGroup(group: GroupRecord, operations: readonly NewOperation[]): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.run(
        `INSERT INTO keel_groups (id, name, status, on_failure, stop_mode, created_at, started_at, updated_at,
          finished_at, lease_owner, lease_expires_at, last_error, recover_attempts, progress_at, on_stuck,
          operation_timeout_ms, correlation_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [
          group.id,
          group.name,
          group.status,
          group.onFailure,
          group.stopMode,
          group.createdAt,
          group.startedAt,
          group.updatedAt,
          group.finishedAt,
          group.leaseOwner,
          group.leaseExpiresAt,
          encode(group.lastError),
          group.recoverAttempts,
          group.progressAt,
          group.onStuck,
          group.operationTimeoutMs,
          group.correlationId,
        ],
      );
      await insertOperations(tx, group.id, 0, operations);
    });
  }

  async appendOperations(groupId: string, operations: readonly NewOperation[]): Promise<number[]> {
    return this.db.transaction(async (tx) => {
      // Locks the group row on PostgreSQL so two appends do not pick the same seqs.
      await tx.run(`UPDATE keel_groups SET updated_at = updated_at WHERE id = ?`, [groupId]);
      const rows = await tx.all(
        `SELECT COALESCE(MAX(seq) + 1, 0) AS next FROM keel_group_operations WHERE group_id = ?`,
        [groupId],
      );
      const first = Number(rows[0]?.next ?? 0);
      await insertOperations(tx, groupId, first, operations);
      return operations.map((_, i) => first + i);
    });
  }

  async getGroup(id: string): Promise<GroupRecord | undefined> {
    const rows = await this.db.all(`SELECT * FROM keel_groups WHERE id = ?`, [id]);
    return rows[0] === undefined ? undefined : toGroup(rows[0]);
  }

  async listGroups(
    filter: { statuses?: readonly GroupStatus[]; limit?: number } = {},
  ): Promise<GroupRecord[]> {
    const params: unknown[] = [];
    let where = '';
    if (filter.statuses !== undefined && filter.statuses.length > 0) {
      where = `WHERE status IN (${filter.statuses.map(() => '?').join(', ')})`;
      params.push(...filter.statuses);
    }
    params.push(filter.limit ?? 1000);
    const rows = await this.db.all(
      `SELECT * FROM keel_groups ${where} ORDER BY created_at, id LIMIT ?`,
      params,
    );
    return rows.map(toGroup);
  }

  async countByStatus(): Promise<Partial<Record<GroupStatus, number>>> {
    const rows = await this.db.all(`SELECT status, COUNT(*) AS n FROM keel_groups GROUP BY status`);
    return Object.fromEntries(rows.map((r) => [String(r.status), Number(r.n)]));
  }

  async getOperations(groupId: string): Promise<OperationRecord[]> {
    const rows = await this.db.all(`SELECT * FROM keel_group_operations WHERE group_id = ? ORDER BY seq`, [
      groupId,
    ]);
    return rows.map(toOperation);
  }

  async updateGroup(id: string, patch: GroupPatch, expect?: readonly GroupStatus[]): Promise<boolean> {
    const set = setClause(patch, GROUP_COLUMNS);
    if (set.sql === '') return true;
    const params = [...set.params, id];
    let sql = `UPDATE keel_groups SET ${set.sql} WHERE id = ?`;
    if (expect !== undefined) {
      sql += ` AND status IN (${expect.map(() => '?').join(', ')})`;
      params.push(...expect);
    }
    return (await this.db.run(sql, params)) > 0;
  }

  async updateOperation(groupId: string, seq: number, patch: OperationPatch): Promise<void> {
    const set = setClause(patch, OPERATION_COLUMNS);
    if (set.sql === '') return;
    await this.db.run(`UPDATE keel_group_operations SET ${set.sql} WHERE group_id = ? AND seq = ?`, [
      ...set.params,
      groupId,
      seq,
    ]);
  }

  async acquireLease(id: string, owner: string, nowMs: number, untilMs: number): Promise<boolean> {
    const changed = await this.db.run(
      `UPDATE keel_groups SET lease_owner = ?, lease_expires_at = ?, updated_at = ?
       WHERE id = ? AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at IS NULL OR lease_expires_at <= ?)`,
      [owner, untilMs, nowMs, id, owner, nowMs],
    );
    return changed > 0;
  }

  async takeOverLease(id: string, owner: string, from: string | null, untilMs: number): Promise<boolean> {
    const changed =
      from === null
        ? await this.db.run(
            `UPDATE keel_groups SET lease_owner = ?, lease_expires_at = ? WHERE id = ? AND lease_owner IS NULL`,
            [owner, untilMs, id],
          )
        : await this.db.run(
            `UPDATE keel_groups SET lease_owner = ?, lease_expires_at = ? WHERE id = ? AND lease_owner = ?`,
            [owner, untilMs, id, from],
          );
    return changed > 0;
  }

  async renewLease(id: string, owner: string, nowMs: number, untilMs: number): Promise<boolean> {
    const changed = await this.db.run(
      `UPDATE keel_groups SET lease_expires_at = ?, updated_at = ? WHERE id = ? AND lease_owner = ?`,
      [untilMs, nowMs, id, owner],
    );
    return changed > 0;
  }

  async releaseLease(id: string, owner: string): Promise<void> {
    await this.db.run(
      `UPDATE keel_groups SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?`,
      [id, owner],
    );
  }

  async addLog(entry: GroupLogEntry): Promise<void> {
    await this.db.run(`INSERT INTO keel_group_logs (group_id, at, level, message) VALUES (?, ?, ?, ?)`, [
      entry.groupId,
      entry.at,
      entry.level,
      entry.message,
    ]);
  }

  async getLogs(groupId: string): Promise<GroupLogEntry[]> {
    const rows = await this.db.all(`SELECT * FROM keel_group_logs WHERE group_id = ? ORDER BY at, message`, [
      groupId,
    ]);
    return rows.map((r) => ({
      groupId: String(r.group_id),
      at: Number(r.at),
      level: String(r.level) as GroupLogEntry['level'],
      message: String(r.message),
    }));
  }

  async deleteGroups(status: GroupStatus, beforeMs: number): Promise<number> {
    return this.db.transaction(async (tx) => {
      const ids = (
        await tx.all(
          `SELECT id FROM keel_groups WHERE status = ? AND COALESCE(finished_at, updated_at) < ?`,
          [status, beforeMs],
        )
      ).map((r) => String(r.id));
      for (const id of ids) {
        await tx.run(`DELETE FROM keel_group_operations WHERE group_id = ?`, [id]);
        await tx.run(`DELETE FROM keel_group_logs WHERE group_id = ?`, [id]);
        await tx.run(`DELETE FROM keel_groups WHERE id = ?`, [id]);
      }
      return ids.length;
    });
  }

  async deleteLogs(beforeMs: number): Promise<number> {
    return this.db.run(`DELETE FROM keel_group_logs WHERE at < ?`, [beforeMs]);
  }

  async addResource(resource: TemporaryResource): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.run(`DELETE FROM keel_group_resources WHERE group_id = ? AND name = ?`, [
        resource.groupId,
        resource.name,
      ]);
      await tx.run(
        `INSERT INTO keel_group_resources (group_id, name, seq, cleanup_executor, cleanup_payload, registered_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
        [
          resource.groupId,
          resource.name,
          resource.seq,
          resource.cleanup.executor,
          encode(resource.cleanup.payload),
          resource.registeredAt,
        ],
      );
    });
  }

  async removeResource(groupId: string, name: string): Promise<boolean> {
    return (
      (await this.db.run(`DELETE FROM keel_group_resources WHERE group_id = ? AND name = ?`, [
        groupId,
        name,
      ])) > 0
    );
  }

  async listResources(filter: { beforeMs?: number; limit?: number } = {}): Promise<ResourceWithOwner[]> {
    const rows = await this.db.all(
      `SELECT r.*, g.status AS group_status FROM keel_group_resources r
       LEFT JOIN keel_groups g ON g.id = r.group_id
       WHERE r.registered_at < ? ORDER BY r.registered_at, r.group_id, r.name LIMIT ?`,
      [filter.beforeMs ?? Number.MAX_SAFE_INTEGER, filter.limit ?? 1000],
    );
    return rows.map(toResource);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

async function insertOperations(
  tx: GroupSqlDriver,
  groupId: string,
  firstSeq: number,
  operations: readonly NewOperation[],
): Promise<void> {
  let seq = firstSeq;
  for (const op of operations) {
    await tx.run(
      `INSERT INTO keel_group_operations (group_id, seq, step, executor, target, forward, rollback, status, attempts,
        timeout_ms, correlation_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)`,
      [
        groupId,
        seq,
        op.step,
        op.executor,
        op.target,
        encode(op.forward),
        encode(op.rollback),
        op.timeoutMs,
        op.correlationId,
      ],
    );
    seq++;
  }
}
