import type { GroupRepository } from './groups-schema.js';
import { postgresGroupRepository, type PostgresGroupOptions } from './groups-postgres.js';
import { sqliteGroupRepository, type SqliteGroupOptions } from './groups-sqlite.js';

/**
 * Opens the groups store named by `urlOrPath`: `postgres://…` / `postgresql://…` for PostgreSQL,
 * `sqlite:<path>` or a plain file path for SQLite. Applies the migrations.
 */
export async function openGroupRepository(
  urlOrPath: string,
  options: SqliteGroupOptions & PostgresGroupOptions = {},
): Promise<GroupRepository> {
  if (/^postgres(ql)?:\/\//.test(urlOrPath)) {
    return postgresGroupRepository(urlOrPath, {
      ...(options.schema === undefined ? {} : { schema: options.schema }),
      ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }),
    });
  }
  const file = urlOrPath.startsWith('sqlite:') ? urlOrPath.slice('sqlite:'.length) : urlOrPath;
  if (file === '') throw new Error('empty store path: pass a SQLite file path or a postgres:// URL');
  return sqliteGroupRepository(file, options);
}
