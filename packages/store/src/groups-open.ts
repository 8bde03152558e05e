import { keelError } from 'keel';
import type { GroupRepository } from './groups-schema.js';
import { openWithRetry, startupSettings, type StartupRetryOptions } from './open-retry.js';
import { redactPostgresUrl } from './queue-postgres.js';
import { postgresGroupRepository, type PostgresGroupOptions } from './groups-postgres.js';
import { sqliteGroupRepository, type SqliteGroupOptions } from './groups-sqlite.js';

/** Options of {@link openGroupRepository}: each store's own, and how to wait for PostgreSQL at start. */
export type OpenGroupRepositoryOptions = SqliteGroupOptions &
  PostgresGroupOptions & {
    /**
     * A PostgreSQL store that is unreachable at start is retried with backoff for up to
     * `maxWaitMs` (default 30 s), its health check saying "starting" meanwhile; `false` fails at once.
     */
    startup?: StartupRetryOptions | false;
  };

/**
 * Opens the groups store named by `urlOrPath`: `postgres://…` / `postgresql://…` for PostgreSQL,
 * `sqlite:<path>` or a plain file path for SQLite. Applies the migrations (unless `access` is
 * `read-only`). A PostgreSQL server that is down is waited for (see `startup`).
 * @throws KeelError `INVALID_CONFIG` for an empty path or another URL scheme; see
 *   {@link sqliteGroupRepository} and {@link postgresGroupRepository} for the rest.
 */
export async function openGroupRepository(
  urlOrPath: string,
  options: OpenGroupRepositoryOptions = {},
): Promise<GroupRepository> {
  if (typeof urlOrPath !== 'string' || urlOrPath.trim() === '') {
    throw keelError(
      'INVALID_CONFIG',
      'groups store: pass a SQLite file path, sqlite:<path> or a postgres:// URL (got an empty value)',
    );
  }
  if (/^postgres(ql)?:\/\//i.test(urlOrPath)) {
    const settings = startupSettings(options.startup, {
      what: `the groups store at ${redactPostgresUrl(urlOrPath)}`,
      checkName: 'groups:store',
      // A timer that keeps the process alive: a service waiting for its database is not done.
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      now: () => Date.now(),
      retryable: (err) => (err as { code?: unknown } | null)?.code === 'GROUP_STORE_UNAVAILABLE',
    });
    return openWithRetry(() => postgresGroupRepository(urlOrPath, options), settings);
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
