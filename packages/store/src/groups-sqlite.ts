import Database from 'better-sqlite3';
import type { GroupRepository } from './groups-schema.js';
import { SqlGroupRepository, type GroupSqlDriver } from './groups-sql.js';

/** Options of {@link sqliteGroupRepository}. */
export interface SqliteGroupOptions {
  /** `FULL` (default) or `NORMAL`: how often SQLite fsyncs in WAL mode. */
  synchronous?: 'FULL' | 'NORMAL';
  /** How long a writer waits for another process's lock, in ms (default 5000). */
  busyTimeoutMs?: number;
}

/**
 * Groups stored in a SQLite file (WAL, `synchronous=FULL` by default). Several processes may
 * open the same file; every call is one transaction.
 */
export async function sqliteGroupRepository(
  file: string,
  options: SqliteGroupOptions = {},
): Promise<GroupRepository> {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
  db.pragma(`busy_timeout = ${String(options.busyTimeoutMs ?? 5000)}`);
  let inTransaction = false;
  const driver: GroupSqlDriver = {
    kind: 'sqlite',
    all(sql, params = []) {
      return Promise.resolve(db.prepare(sql).all(...params) as Record<string, unknown>[]);
    },
    run(sql, params = []) {
      const stmt = db.prepare(sql);
      return Promise.resolve(stmt.reader ? stmt.all(...params).length : stmt.run(...params).changes);
    },
    async transaction(fn) {
      // better-sqlite3 is synchronous, so an async body cannot interleave with another call of
      // this connection as long as every statement inside is awaited in turn.
      if (inTransaction) return fn(driver);
      db.exec('BEGIN IMMEDIATE');
      inTransaction = true;
      try {
        const result = await fn(driver);
        db.exec('COMMIT');
        return result;
      } catch (err) {
        db.exec('ROLLBACK');
        throw err;
      } finally {
        inTransaction = false;
      }
    },
    close() {
      db.close();
      return Promise.resolve();
    },
  };
  const repo = new SqlGroupRepository(driver);
  await repo.migrate();
  return repo;
}
