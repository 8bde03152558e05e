import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { isKeelError, keelError } from 'keel';
import { assertStoreFile, checkAccess, isNotSqlite, notAStore, type StoreAccess } from './access.js';
import { preparePrivateSqliteFile } from './private-files.js';
import { SQLITE_QUEUE_MIGRATIONS } from './queue-schema.js';
import {
  firstOfKey,
  toQueueRow,
  type ClaimRef,
  type EnqueueResult,
  type NewQueueRow,
  type QueueCounts,
  type QueueItemState,
  type QueueRow,
  type QueueStore,
} from './queue-store.js';

/** Options of {@link SqliteQueueStore}. */
export interface SqliteQueueStoreOptions {
  /** `FULL` (default) or `NORMAL` (faster, may lose the last commits on power loss). */
  synchronous?: 'FULL' | 'NORMAL';
  /** Wait for another process's write lock, in ms (default 5000). */
  busyTimeoutMs?: number;
  /**
   * `create` (default), `existing` (the file must already be a keel queue store) or `read-only`
   * (an existing, current store, opened without writing anything); see {@link StoreAccess}.
   */
  access?: StoreAccess;
}

/**
 * The queue's SQLite store (WAL, `synchronous=FULL` by default). The file is created 0600 (its
 * directory 0700), and one found open to other users is made private, with a process warning.
 * Every method is one
 * transaction; {@link enqueue} and {@link complete} commit a whole batch with one fsync (group commit).
 * better-sqlite3 is synchronous: the promises it returns are already settled.
 */
export class SqliteQueueStore implements QueueStore {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  private readonly db: Database.Database;
  private readonly stmts: ReturnType<SqliteQueueStore['prepare']>;

  /**
   * @throws KeelError `QUEUE_STORE_OPEN_FAILED` when the file cannot be opened or migrated;
   *   `QUEUE_STORE_NOT_FOUND` (with `existing` or `read-only` access) when it is missing or not a
   *   keel queue store.
   */
  constructor(file: string, options: SqliteQueueStoreOptions = {}) {
    this.location = file;
    const synchronous = options.synchronous ?? 'FULL';
    if (synchronous !== 'FULL' && synchronous !== 'NORMAL') {
      throw keelError(
        'INVALID_CONFIG',
        `queue store: synchronous must be 'FULL' or 'NORMAL', got ${String(synchronous)}`,
      );
    }
    const access = checkAccess('queue store', options.access);
    if (access !== 'create') assertStoreFile('QUEUE_STORE_NOT_FOUND', 'queue', file);
    let db: Database.Database | undefined;
    try {
      if (access !== 'read-only') preparePrivateSqliteFile(file);
      db = new Database(file, { readonly: access === 'read-only', fileMustExist: access !== 'create' });
      this.db = db;
      if (access !== 'read-only') this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${synchronous}`);
      this.db.pragma(`busy_timeout = ${String(options.busyTimeoutMs ?? 5000)}`);
      if (access !== 'create') this.assertKeelStore(access);
      if (access !== 'read-only') this.migrate();
      this.stmts = this.prepare();
    } catch (err) {
      if (db?.open) db.close();
      if (isKeelError(err)) throw err;
      if (isNotSqlite(err)) throw notAStore('QUEUE_STORE_NOT_FOUND', 'queue', file, 'not-sqlite', err);
      throw keelError(
        'QUEUE_STORE_OPEN_FAILED',
        `could not open the queue store at ${file}: ${err instanceof Error ? err.message : String(err)}`,
        { file },
        { cause: err },
      );
    }
  }

  /** Refuses a file without keel's queue tables (and, read-only, one whose schema needs migrating). */
  private assertKeelStore(access: StoreAccess): void {
    const tables = this.db
      .prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'keel_migrations'`)
      .all();
    const row =
      tables.length === 0
        ? undefined
        : (this.db.prepare(`SELECT version FROM keel_migrations WHERE module = 'queue'`).get() as
            { version: number } | undefined);
    if (row === undefined) throw notAStore('QUEUE_STORE_NOT_FOUND', 'queue', this.location, 'no-keel-tables');
    if (access === 'read-only' && row.version < SQLITE_QUEUE_MIGRATIONS.length)
      throw notAStore('QUEUE_STORE_NOT_FOUND', 'queue', this.location, 'old-schema');
  }

  private migrate(): void {
    this.db.exec(
      `CREATE TABLE IF NOT EXISTS keel_migrations (module TEXT PRIMARY KEY, version INTEGER NOT NULL)`,
    );
    const tx = this.db.transaction(() => {
      const row = this.db.prepare(`SELECT version FROM keel_migrations WHERE module = 'queue'`).get() as
        { version: number } | undefined;
      const from = row?.version ?? 0;
      if (from > SQLITE_QUEUE_MIGRATIONS.length) {
        throw new Error(
          `the queue schema is version ${String(from)}, newer than this keel knows (${String(SQLITE_QUEUE_MIGRATIONS.length)}): upgrade keel`,
        );
      }
      for (const statements of SQLITE_QUEUE_MIGRATIONS.slice(from))
        for (const s of statements) this.db.exec(s);
      this.db
        .prepare(
          `INSERT INTO keel_migrations(module, version) VALUES ('queue', ?)
           ON CONFLICT(module) DO UPDATE SET version = excluded.version`,
        )
        .run(SQLITE_QUEUE_MIGRATIONS.length);
    });
    tx.immediate();
  }

  private prepare() {
    const db = this.db;
    return {
      insert: db.prepare(
        `INSERT INTO keel_queue_items(queue, payload, status, partition_key, idempotency_key, priority, max_attempts, run_at, created_at, correlation_id)
         VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      ),
      findKey: db.prepare(`SELECT id FROM keel_queue_items WHERE queue = ? AND idempotency_key = ?`),
      paused: db.prepare(`SELECT paused FROM keel_queue_queues WHERE queue = ?`),
      reclaim: db.prepare(
        `UPDATE keel_queue_items SET status = 'pending', token = NULL, lease_until = NULL
         WHERE queue = ? AND status = 'active' AND lease_until < ?`,
      ),
      candidates: db.prepare(
        `SELECT * FROM keel_queue_items i INDEXED BY keel_queue_claim_order
         WHERE queue = ? AND status = 'pending' AND run_at <= ?
           AND (partition_key IS NULL OR NOT EXISTS (
             SELECT 1 FROM keel_queue_items o WHERE o.queue = i.queue AND o.partition_key = i.partition_key
               AND o.status IN ('pending', 'active') AND (o.status = 'active' OR o.id < i.id)))
         ORDER BY priority DESC, id LIMIT ?`,
      ),
      lease: db.prepare(
        `UPDATE keel_queue_items SET status = 'active', token = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?`,
      ),
      heartbeat: db.prepare(
        `UPDATE keel_queue_items SET lease_until = ? WHERE id = ? AND token = ? AND status = 'active'`,
      ),
      complete: db.prepare(
        `UPDATE keel_queue_items SET status = 'completed', token = NULL, lease_until = NULL, finished_at = ?
         WHERE id = ? AND token = ? AND status = 'active'`,
      ),
      failRead: db.prepare(
        `SELECT errors FROM keel_queue_items WHERE id = ? AND token = ? AND status = 'active'`,
      ),
      failWrite: db.prepare(
        `UPDATE keel_queue_items SET status = ?, token = NULL, lease_until = NULL, run_at = COALESCE(?, run_at),
           errors = ?, finished_at = ? WHERE id = ?`,
      ),
      release: db.prepare(
        `UPDATE keel_queue_items SET status = 'pending', token = NULL, lease_until = NULL, attempts = MAX(attempts - 1, 0)
         WHERE id = ? AND token = ? AND status = 'active'`,
      ),
      list: db.prepare(`SELECT * FROM keel_queue_items WHERE queue = ? AND status = ? ORDER BY id LIMIT ?`),
      redrive: db.prepare(
        `UPDATE keel_queue_items SET status = 'pending', attempts = 0, run_at = ?, finished_at = NULL
         WHERE queue = ? AND status = 'dead' AND (? IS NULL OR id = ?)`,
      ),
      setPaused: db.prepare(
        `INSERT INTO keel_queue_queues(queue, paused) VALUES (?, ?) ON CONFLICT(queue) DO UPDATE SET paused = excluded.paused`,
      ),
      sweep: db.prepare(
        `DELETE FROM keel_queue_items WHERE queue = ?
           AND ((status = 'completed' AND finished_at < ?) OR (status = 'dead' AND finished_at < ?))`,
      ),
      counts: db.prepare(
        `SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest FROM keel_queue_items WHERE queue = ? GROUP BY status`,
      ),
      pendingCount: db.prepare(
        `SELECT COUNT(*) AS n FROM keel_queue_items WHERE queue = ? AND status = 'pending'`,
      ),
      remove: db.prepare(`DELETE FROM keel_queue_items WHERE id = ?`),
      queues: db.prepare(
        `SELECT DISTINCT queue FROM keel_queue_items UNION SELECT queue FROM keel_queue_queues ORDER BY queue`,
      ),
    };
  }

  enqueue(queue: string, items: readonly NewQueueRow[], now: number): Promise<EnqueueResult[]> {
    return this.run(() => {
      const first = firstOfKey(items);
      const tx = this.db.transaction(() => {
        const out: EnqueueResult[] = [];
        items.forEach((it, i) => {
          const f = first[i] ?? i;
          const earlier = out[f];
          if (f !== i && earlier) {
            out.push({ id: earlier.id, duplicate: true });
            return;
          }
          const res = this.stmts.insert.run(
            queue,
            it.payload,
            it.partitionKey ?? null,
            it.idempotencyKey ?? null,
            it.priority,
            it.maxAttempts,
            it.runAt,
            now,
            it.correlationId ?? null,
          );
          if (res.changes === 1) out.push({ id: Number(res.lastInsertRowid), duplicate: false });
          else {
            const existing = this.stmts.findKey.get(queue, it.idempotencyKey ?? null) as
              { id: number } | undefined;
            out.push({ id: Number(existing?.id), duplicate: true });
          }
        });
        return out;
      });
      return tx.immediate();
    });
  }

  claim(queue: string, limit: number, leaseMs: number, now: number): Promise<QueueRow[]> {
    return this.run(() => this.db.transaction(() => this.claimIn(queue, limit, leaseMs, now)).immediate());
  }

  /** Completes `done` and claims in one transaction: one fsync instead of two per worker cycle. */
  completeAndClaim(
    done: readonly ClaimRef[],
    queue: string,
    limit: number,
    leaseMs: number,
    now: number,
  ): Promise<{ completed: Set<number>; claimed: QueueRow[] }> {
    return this.run(() =>
      this.db
        .transaction(() => ({
          completed: this.completeIn(done, now),
          claimed: this.claimIn(queue, limit, leaseMs, now),
        }))
        .immediate(),
    );
  }

  private claimIn(queue: string, limit: number, leaseMs: number, now: number): QueueRow[] {
    const p = this.stmts.paused.get(queue) as { paused: number } | undefined;
    if (p?.paused) return [];
    this.stmts.reclaim.run(queue, now);
    const candidates = this.stmts.candidates.all(queue, now, limit) as Record<string, unknown>[];
    return candidates.map((c) => {
      const token = randomUUID();
      this.stmts.lease.run(token, now + leaseMs, c.id);
      return {
        ...toQueueRow(c),
        status: 'active' as const,
        token,
        leaseUntil: now + leaseMs,
        attempts: Number(c.attempts) + 1,
      };
    });
  }

  private completeIn(items: readonly ClaimRef[], now: number): Set<number> {
    const done = new Set<number>();
    for (const it of items) if (this.stmts.complete.run(now, it.id, it.token).changes === 1) done.add(it.id);
    return done;
  }

  heartbeat(items: readonly ClaimRef[], leaseUntil: number): Promise<Set<number>> {
    return this.run(() => {
      const tx = this.db.transaction(() => {
        const held = new Set<number>();
        for (const it of items)
          if (this.stmts.heartbeat.run(leaseUntil, it.id, it.token).changes === 1) held.add(it.id);
        return held;
      });
      return tx.immediate();
    });
  }

  complete(items: readonly ClaimRef[], now: number): Promise<Set<number>> {
    return this.run(() => this.db.transaction(() => this.completeIn(items, now)).immediate());
  }

  fail(item: ClaimRef, error: unknown, runAt: number | null, now: number): Promise<boolean> {
    return this.run(() => {
      const tx = this.db.transaction(() => {
        const row = this.stmts.failRead.get(item.id, item.token) as { errors: string } | undefined;
        if (!row) return false;
        const errors = JSON.parse(row.errors) as unknown[];
        errors.push(error);
        this.stmts.failWrite.run(
          runAt === null ? 'dead' : 'pending',
          runAt,
          JSON.stringify(errors),
          runAt === null ? now : null,
          item.id,
        );
        return true;
      });
      return tx.immediate();
    });
  }

  release(item: ClaimRef): Promise<boolean> {
    return this.run(() => this.stmts.release.run(item.id, item.token).changes === 1);
  }

  list(queue: string, state: QueueItemState, limit: number): Promise<QueueRow[]> {
    return this.run(() =>
      (this.stmts.list.all(queue, state, limit) as Record<string, unknown>[]).map(toQueueRow),
    );
  }

  redrive(queue: string, now: number, ids?: readonly number[]): Promise<number> {
    return this.run(() => {
      const tx = this.db.transaction(() => {
        if (!ids) return this.stmts.redrive.run(now, queue, null, null).changes;
        let n = 0;
        for (const id of ids) n += this.stmts.redrive.run(now, queue, id, id).changes;
        return n;
      });
      return tx.immediate();
    });
  }

  setPaused(queue: string, paused: boolean): Promise<void> {
    return this.run(() => {
      this.stmts.setPaused.run(queue, paused ? 1 : 0);
    });
  }

  sweep(queue: string, completedBefore: number, deadBefore: number): Promise<number> {
    return this.run(() => this.stmts.sweep.run(queue, completedBefore, deadBefore).changes);
  }

  counts(queue: string): Promise<QueueCounts> {
    return this.run(() => {
      const rows = this.stmts.counts.all(queue) as { status: string; n: number; oldest: number }[];
      const p = this.stmts.paused.get(queue) as { paused: number } | undefined;
      const out: QueueCounts = {
        pending: 0,
        active: 0,
        completed: 0,
        dead: 0,
        oldestPendingAt: null,
        paused: !!p?.paused,
      };
      for (const r of rows) {
        if (
          r.status === 'pending' ||
          r.status === 'active' ||
          r.status === 'completed' ||
          r.status === 'dead'
        )
          out[r.status] = r.n;
        if (r.status === 'pending') out.oldestPendingAt = r.oldest;
      }
      return out;
    });
  }

  queues(): Promise<string[]> {
    return this.run(() => (this.stmts.queues.all() as { queue: string }[]).map((r) => r.queue));
  }

  /** Pending items of `queue`, counted synchronously (for the outage spool's hand-over). */
  pendingCountSync(queue: string): number {
    return (this.stmts.pendingCount.get(queue) as { n: number }).n;
  }

  /** Deletes items by id (the outage spool, once they are stored in the primary store). */
  remove(ids: readonly number[]): Promise<number> {
    return this.run(() =>
      this.db.transaction(() => ids.reduce((n, id) => n + this.stmts.remove.run(id).changes, 0)).immediate(),
    );
  }

  close(): Promise<void> {
    return this.run(() => {
      if (this.db.open) this.db.close();
    });
  }

  /** Runs a synchronous step and turns its outcome into a settled promise. */
  private run<T>(fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
