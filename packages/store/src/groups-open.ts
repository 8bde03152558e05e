import { keelError } from 'keel';
import type { GroupRepository } from './groups-schema.js';
import { postgresGroupRepository, type PostgresGroupOptions } from './groups-postgres.js';
import { sqliteGroupRepository, type SqliteGroupOptions } from './groups-sqlite.js';

/**
 * Opens the groups store named by `urlOrPath`: `postgres://…` / `postgresql://…` for PostgreSQL,
 * `sqlite:<path>` or a plain file path for SQLite. Applies the migrations (unless `access` is
 * `read-only`).
 * @throws KeelError `INVALID_CONFIG` for an empty path or another URL scheme; see
 *   {@link sqliteGroupRepository} and {@link postgresGroupRepository} for the rest.
 */
export async function openGroupRepository(
  urlOrPath: string,
  options: SqliteGroupOptions & PostgresGroupOptions = {},
): Promise<GroupRepository> {
  if (typeof urlOrPath !== 'string' || urlOrPath.trim() === '') {
    throw keelError(
      'INVALID_CONFIG',
      'groups store: pass a SQLite file path, sqlite:<path> or a postgres:// URL (got an empty value)',
    );
  }
  if (/^postgres(ql)?:\/\//i.test(urlOrPath)) {
    return postgresGroupRepository(urlOrPath, options);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(urlOrPath)) {
    const scheme = urlOrPath.slice(0, urlOrPath.indexOf(':'));
    throw keelError(
      'INVALID_CONFIG',
      `groups store: unsupported scheme "${scheme}:"; use a SQLite file path, sqlite:<path> or postgres://user@host:port/database`,
    );
  }
  const file = urlOrPath.startsWith('sqlite:') ? urlOrPath.slice('sqlite:'.length) : urlOrPath;
  if (file === '')
    throw keelError(
      'INVALID_CONFIG',
      'groups store: sqlite: needs a file path, e.g. sqlite:/var/lib/app/groups.db',
    );
  return sqliteGroupRepository(file, options);
}
