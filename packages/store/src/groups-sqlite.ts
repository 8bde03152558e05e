import Database from 'better-sqlite3';
import { isKeelError, keelError } from 'keel';
import { assertStoreFile, checkAccess, isNotSqlite, notAStore, type StoreAccess } from './access.js';
import type { GroupRepository } from './groups-schema.js';
import { preparePrivateSqliteFile } from './private-files.js';
import { GROUPS_MIGRATIONS, SqlGroupRepository, type GroupSqlDriver } from './groups-sql.js';

/** Options of {@link sqliteGroupRepository}. */
export interface SqliteGroupOptions {
  /** `FULL` (default) or `NORMAL`: how often SQLite fsyncs in WAL mode. */
  synchronous?: 'FULL' | 'NORMAL';
  /** How long a writer waits for another process's lock, in ms (default 5000). */
  busyTimeoutMs?: number;
  /**
   * `create` (default), `existing` (the file must already be a keel groups store) or `read-only`
   * (an existing, current store, opened without writing anything); see {@link StoreAccess}.
   */
  access?: StoreAccess;
}

/**
 * Groups stored in a SQLite file (WAL, `synchronous=FULL` by default). Several processes may
 * open the same file; every call is one transaction. The file is created 0600 (its directory
 * 0700), and one found open to other users is made private, with a process warning.
 * @throws KeelError `GROUP_STORE_NOT_FOUND` (access `existing` or `read-only`) when the file is
 *   missing or not a keel groups store, `GROUP_STORE_OPEN_FAILED` when it cannot be opened or migrated;
 *   both name the file.
 */
export async function sqliteGroupRepository(
  file: string,
  options: SqliteGroupOptions = {},
): Promise<GroupRepository> {
  const access = checkAccess('groups store', options.access);
  if (access !== 'create') assertStoreFile('GROUP_STORE_NOT_FOUND', 'groups', file);
  let db: Database.Database | undefined;
  try {
    if (access !== 'read-only') preparePrivateSqliteFile(file);
    db = new Database(file, { readonly: access === 'read-only', fileMustExist: access !== 'create' });
    if (access !== 'read-only') db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
    db.pragma(`busy_timeout = ${String(options.busyTimeoutMs ?? 5000)}`);
    const repo = new SqlGroupRepository(sqliteDriver(db), file);
    if (access !== 'create') {
      const version = await repo.schemaVersion();
      if (version === 0) throw notAStore('GROUP_STORE_NOT_FOUND', 'groups', file, 'no-keel-tables');
      if (access === 'read-only' && version < GROUPS_MIGRATIONS.length)
        throw notAStore('GROUP_STORE_NOT_FOUND', 'groups', file, 'old-schema');
    }
    if (access !== 'read-only') await repo.migrate();
    return repo;
  } catch (err) {
    if (db?.open) db.close();
    if (isKeelError(err)) throw err;
    if (isNotSqlite(err)) throw notAStore('GROUP_STORE_NOT_FOUND', 'groups', file, 'not-sqlite', err);
    throw keelError(
      'GROUP_STORE_OPEN_FAILED',
      `could not open the groups store at ${file}: ${err instanceof Error ? err.message : String(err)}`,
      { store: file },
      { cause: err },
    );
  }
}

function sqliteDriver(db: Database.Database): GroupSqlDriver {
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
  return driver;
}
