import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { keelError } from '../errors/index.js';

/** A queue item as stored. */
export interface QueueRow {
  id: number;
  queue: string;
  payload: string;
  status: 'pending' | 'active' | 'completed' | 'dead';
  partitionKey: string | null;
  idempotencyKey: string | null;
  priority: number;
  attempts: number;
  maxAttempts: number;
  runAt: number;
  leaseUntil: number | null;
  token: string | null;
  errors: string;
  createdAt: number;
}

/** A new item for {@link SqliteQueueStore.insertMany}. */
export interface NewQueueRow {
  payload: string;
  partitionKey?: string | undefined;
  idempotencyKey?: string | undefined;
  priority: number;
  maxAttempts: number;
  runAt: number;
}

/** Options of {@link SqliteQueueStore}. */
export interface SqliteQueueStoreOptions {
  /** `FULL` (default) or `NORMAL`. */
  synchronous?: 'FULL' | 'NORMAL';
  /** Wait for another process's write lock, in ms (default 5000). */
  busyTimeoutMs?: number;
}

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS keel_queue_items (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     queue TEXT NOT NULL,
     payload TEXT NOT NULL,
     status TEXT NOT NULL,
     partition_key TEXT,
     idempotency_key TEXT,
     priority INTEGER NOT NULL DEFAULT 0,
     attempts INTEGER NOT NULL DEFAULT 0,
     max_attempts INTEGER NOT NULL,
     run_at INTEGER NOT NULL,
     lease_until INTEGER,
     token TEXT,
     errors TEXT NOT NULL DEFAULT '[]',
     created_at INTEGER NOT NULL,
     finished_at INTEGER
   );
   CREATE UNIQUE INDEX IF NOT EXISTS keel_queue_idem ON keel_queue_items(queue, idempotency_key)
     WHERE idempotency_key IS NOT NULL;
   CREATE INDEX IF NOT EXISTS keel_queue_ready ON keel_queue_items(queue, status, run_at, priority);`,
];

function toRow(r: Record<string, unknown>): QueueRow {
  return {
    id: Number(r.id),
    queue: String(r.queue),
    payload: String(r.payload),
    status: r.status as QueueRow['status'],
    partitionKey: (r.partition_key as string | null) ?? null,
    idempotencyKey: (r.idempotency_key as string | null) ?? null,
    priority: Number(r.priority),
    attempts: Number(r.attempts),
    maxAttempts: Number(r.max_attempts),
    runAt: Number(r.run_at),
    leaseUntil: r.lease_until === null ? null : Number(r.lease_until),
    token: (r.token as string | null) ?? null,
    errors: String(r.errors),
    createdAt: Number(r.created_at),
  };
}

/**
 * The queue's SQLite store (WAL, `synchronous=FULL` by default). Every method is one
 * transaction; {@link insertMany} commits a whole batch with one fsync (group commit).
 */
export class SqliteQueueStore {
  private readonly db: Database.Database;

  constructor(file: string, options: SqliteQueueStoreOptions = {}) {
    try {
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
      this.db.pragma(`busy_timeout = ${String(options.busyTimeoutMs ?? 5000)}`);
      this.db.exec(
        `CREATE TABLE IF NOT EXISTS keel_migrations (module TEXT PRIMARY KEY, version INTEGER NOT NULL)`,
      );
      const tx = this.db.transaction(() => {
        const row = this.db.prepare(`SELECT version FROM keel_migrations WHERE module = 'queue'`).get() as
          { version: number } | undefined;
        const from = row?.version ?? 0;
        for (let v = from; v < MIGRATIONS.length; v++) this.db.exec(MIGRATIONS[v] ?? '');
        this.db
          .prepare(
            `INSERT INTO keel_migrations(module, version) VALUES ('queue', ?)
                    ON CONFLICT(module) DO UPDATE SET version = excluded.version`,
          )
          .run(MIGRATIONS.length);
      });
      tx.immediate();
    } catch (err) {
      throw keelError(
        'QUEUE_STORE_OPEN_FAILED',
        `could not open the queue store at ${file}`,
        { file },
        { cause: err },
      );
    }
  }

  /** Inserts items in one transaction; an existing idempotency key returns the first item's id. */
  insertMany(
    queue: string,
    items: readonly NewQueueRow[],
    now: number,
  ): { id: number; duplicate: boolean }[] {
    const insert = this.db.prepare(
      `INSERT INTO keel_queue_items(queue, payload, status, partition_key, idempotency_key, priority, max_attempts, run_at, created_at)
       VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
    );
    const find = this.db.prepare(`SELECT id FROM keel_queue_items WHERE queue = ? AND idempotency_key = ?`);
    const tx = this.db.transaction(() =>
      items.map((it) => {
        const res = insert.run(
          queue,
          it.payload,
          it.partitionKey ?? null,
          it.idempotencyKey ?? null,
          it.priority,
          it.maxAttempts,
          it.runAt,
          now,
        );
        if (res.changes === 1) return { id: Number(res.lastInsertRowid), duplicate: false };
        const existing = find.get(queue, it.idempotencyKey ?? null) as { id: number } | undefined;
        return { id: Number(existing?.id), duplicate: true };
      }),
    );
    return tx.immediate();
  }

  /**
   * Claims up to `limit` due items with a lease and a fresh attempt token. Expired leases are
   * reclaimed; a partition with an active item is skipped, so one partition runs one at a time in order.
   */
  claim(queue: string, limit: number, leaseMs: number, now: number): QueueRow[] {
    const tx = this.db.transaction(() => {
      this.db
        .prepare(
          `UPDATE keel_queue_items SET status = 'pending', token = NULL, lease_until = NULL
                  WHERE queue = ? AND status = 'active' AND lease_until < ?`,
        )
        .run(queue, now);
      const candidates = this.db
        .prepare(
          `SELECT * FROM keel_queue_items i WHERE queue = ? AND status = 'pending' AND run_at <= ?
             AND (partition_key IS NULL OR NOT EXISTS (
               SELECT 1 FROM keel_queue_items o WHERE o.queue = i.queue AND o.partition_key = i.partition_key
                 AND (o.status = 'active' OR (o.status = 'pending' AND o.id < i.id))))
           ORDER BY priority DESC, id LIMIT ?`,
        )
        .all(queue, now, limit) as Record<string, unknown>[];
      const lease = this.db.prepare(
        `UPDATE keel_queue_items SET status = 'active', token = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?`,
      );
      return candidates.map((c) => {
        const token = randomUUID();
        lease.run(token, now + leaseMs, c.id);
        return {
          ...toRow(c),
          status: 'active' as const,
          token,
          leaseUntil: now + leaseMs,
          attempts: Number(c.attempts) + 1,
        };
      });
    });
    return tx.immediate();
  }

  /** Extends a lease; false when the token is stale. */
  heartbeat(id: number, token: string, leaseUntil: number): boolean {
    return (
      this.db
        .prepare(
          `UPDATE keel_queue_items SET lease_until = ? WHERE id = ? AND token = ? AND status = 'active'`,
        )
        .run(leaseUntil, id, token).changes === 1
    );
  }

  /** Marks an item completed; false when the token is stale. */
  complete(id: number, token: string, now: number): boolean {
    return (
      this.db
        .prepare(
          `UPDATE keel_queue_items SET status = 'completed', token = NULL, lease_until = NULL, finished_at = ?
                  WHERE id = ? AND token = ? AND status = 'active'`,
        )
        .run(now, id, token).changes === 1
    );
  }

  /** Records a failure: back to pending at `runAt`, or dead when `runAt` is null. False when stale. */
  fail(id: number, token: string, error: unknown, runAt: number | null, now: number): boolean {
    const tx = this.db.transaction(() => {
      const row = this.db
        .prepare(`SELECT errors FROM keel_queue_items WHERE id = ? AND token = ? AND status = 'active'`)
        .get(id, token) as { errors: string } | undefined;
      if (!row) return false;
      const errors = JSON.parse(row.errors) as unknown[];
      errors.push(error);
      this.db
        .prepare(
          `UPDATE keel_queue_items SET status = ?, token = NULL, lease_until = NULL, run_at = COALESCE(?, run_at),
                    errors = ?, finished_at = ? WHERE id = ?`,
        )
        .run(
          runAt === null ? 'dead' : 'pending',
          runAt,
          JSON.stringify(errors),
          runAt === null ? now : null,
          id,
        );
      return true;
    });
    return tx.immediate();
  }

  /** Gives a claimed item back without counting the attempt (graceful close). */
  release(id: number, token: string): boolean {
    return (
      this.db
        .prepare(
          `UPDATE keel_queue_items SET status = 'pending', token = NULL, lease_until = NULL, attempts = MAX(attempts - 1, 0)
                  WHERE id = ? AND token = ? AND status = 'active'`,
        )
        .run(id, token).changes === 1
    );
  }

  /** Items of one status, oldest first. */
  list(queue: string, status: QueueRow['status'], limit: number): QueueRow[] {
    return (
      this.db
        .prepare(`SELECT * FROM keel_queue_items WHERE queue = ? AND status = ? ORDER BY id LIMIT ?`)
        .all(queue, status, limit) as Record<string, unknown>[]
    ).map(toRow);
  }

  /** Sends dead letters back to pending with fresh attempts; returns how many. */
  redrive(queue: string, now: number, ids?: readonly number[]): number {
    const tx = this.db.transaction(() => {
      const stmt = this.db.prepare(
        `UPDATE keel_queue_items SET status = 'pending', attempts = 0, run_at = ?, finished_at = NULL
         WHERE queue = ? AND status = 'dead' AND (? IS NULL OR id = ?)`,
      );
      if (!ids) return stmt.run(now, queue, null, null).changes;
      let n = 0;
      for (const id of ids) n += stmt.run(now, queue, id, id).changes;
      return n;
    });
    return tx.immediate();
  }

  /** Deletes completed items finished before `completedBefore` and dead ones before `deadBefore`. */
  purge(queue: string, completedBefore: number, deadBefore: number): number {
    return this.db
      .prepare(
        `DELETE FROM keel_queue_items WHERE queue = ? AND ((status = 'completed' AND finished_at < ?) OR (status = 'dead' AND finished_at < ?))`,
      )
      .run(queue, completedBefore, deadBefore).changes;
  }

  /** Counts per status and the oldest pending item's creation time. */
  counts(queue: string): {
    pending: number;
    active: number;
    completed: number;
    dead: number;
    oldestPendingAt: number | null;
  } {
    const rows = this.db
      .prepare(
        `SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest FROM keel_queue_items WHERE queue = ? GROUP BY status`,
      )
      .all(queue) as {
      status: string;
      n: number;
      oldest: number;
    }[];
    const out = { pending: 0, active: 0, completed: 0, dead: 0, oldestPendingAt: null as number | null };
    for (const r of rows) {
      if (r.status === 'pending' || r.status === 'active' || r.status === 'completed' || r.status === 'dead')
        out[r.status] = r.n;
      if (r.status === 'pending') out.oldestPendingAt = r.oldest;
    }
    return out;
  }

  close(): void {
    this.db.close();
  }
}
