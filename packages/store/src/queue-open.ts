import { keelError } from 'keel';
import { PostgresQueueStore, type PostgresQueueStoreOptions } from './queue-postgres.js';
import { SqliteQueueStore, type SqliteQueueStoreOptions } from './queue-sqlite.js';
import type { QueueStore } from './queue-store.js';

/** Options of {@link openQueueStore}: each applies to its own kind of store. */
export type QueueStoreOptions = SqliteQueueStoreOptions & PostgresQueueStoreOptions;

/**
 * Opens the queue store named by `target`: `postgres://…` / `postgresql://…` for PostgreSQL,
 * `sqlite:<path>` or a plain file path for SQLite. Applies the schema migrations.
 * @throws KeelError `INVALID_CONFIG` for an empty target or a bad URL (the message never shows a
 *   password), `QUEUE_STORE_OPEN_FAILED` / `QUEUE_STORE_UNAVAILABLE` when the store cannot be opened,
 *   `QUEUE_STORE_NOT_FOUND` when `access` is `existing` or `read-only` and it is not a keel queue store.
 */
export async function openQueueStore(target: string, options: QueueStoreOptions = {}): Promise<QueueStore> {
  if (typeof target !== 'string' || target.trim() === '') {
    throw keelError(
      'INVALID_CONFIG',
      'queue store: pass a SQLite file path, sqlite:<path> or a postgres:// URL (got an empty value)',
    );
  }
  if (/^postgres(ql)?:/i.test(target)) {
    return PostgresQueueStore.open(target, {
      ...(options.schema === undefined ? {} : { schema: options.schema }),
      ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }),
      ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
      ...(options.queryTimeoutMs === undefined ? {} : { queryTimeoutMs: options.queryTimeoutMs }),
      ...(options.access === undefined ? {} : { access: options.access }),
    });
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) {
    const scheme = target.slice(0, target.indexOf(':'));
    throw keelError(
      'INVALID_CONFIG',
      `queue store: unsupported scheme "${scheme}:"; use a SQLite file path, sqlite:<path> or postgres://user@host:port/database`,
    );
  }
  const file = target.startsWith('sqlite:') ? target.slice('sqlite:'.length) : target;
  if (file === '')
    throw keelError(
      'INVALID_CONFIG',
      'queue store: sqlite: needs a file path, e.g. sqlite:/var/lib/app/queue.db',
    );
  return Promise.resolve(
    new SqliteQueueStore(file, {
      ...(options.synchronous === undefined ? {} : { synchronous: options.synchronous }),
      ...(options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs }),
      ...(options.access === undefined ? {} : { access: options.access }),
    }),
  );
}
