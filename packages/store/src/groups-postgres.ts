import pg from 'pg';
import { classify, isKeelError, keelError, type KeelError } from 'keel';
import { checkAccess, notAStore, type StoreAccess } from './access.js';
import type { GroupRepository } from './groups-schema.js';
import { GROUPS_MIGRATIONS, SqlGroupRepository, type GroupSqlDriver } from './groups-sql.js';
import { redactPostgresUrl } from './queue-postgres.js';

/** Options of {@link postgresGroupRepository}. */
export interface PostgresGroupOptions {
  /** A schema to keep the tables in (created if missing; default: the connection's search_path). */
  schema?: string;
  /** Connections in the pool (default 4). */
  maxConnections?: number;
  /** Give up connecting after this long, in ms (default 5000). */
  connectTimeoutMs?: number;
  /** Give up on one query after this long, in ms (default 30 000). */
  queryTimeoutMs?: number;
  /**
   * `create` (default), `existing` (the keel groups tables must already exist) or `read-only` (no
   * schema, table or migration is written); see {@link StoreAccess}.
   */
  access?: StoreAccess;
}

const toDollar = (sql: string): string => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${String(++n)}`);
};

function clientDriver(client: pg.PoolClient): GroupSqlDriver {
  const driver: GroupSqlDriver = {
    kind: 'postgres',
    async all(sql, params = []) {
      return (await client.query(toDollar(sql), [...params])).rows as Record<string, unknown>[];
    },
    async run(sql, params = []) {
      return (await client.query(toDollar(sql), [...params])).rowCount ?? 0;
    },
    transaction: (fn) => fn(driver),
    close: () => Promise.resolve(),
  };
  return driver;
}

function positiveMs(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(Number.isFinite(value) && value > 0))
    throw keelError(
      'INVALID_CONFIG',
      `groups store: ${name} must be a number of ms > 0, got ${String(value)}`,
    );
  return value;
}

/** A failure while opening: unreachable (retryable) or refused, naming the store without credentials. */
function openError(err: unknown, where: string): KeelError {
  if (isKeelError(err) && err.code.startsWith('GROUP_')) return err;
  const e = classify(err);
  if (e.retryable) {
    return keelError(
      'GROUP_STORE_UNAVAILABLE',
      `the groups store at ${where} is unavailable (${e.message}); retry later`,
      { store: where, causeCode: e.code },
      { cause: err, retryable: true, kind: 'transient', hints: ['retry'] },
    );
  }
  return keelError(
    'GROUP_STORE_OPEN_FAILED',
    `could not open the groups store at ${where}: ${e.message}`,
    { store: where, causeCode: e.code },
    { cause: err },
  );
}

/**
 * Groups stored in PostgreSQL through a pg pool. `url` is a `postgres://` connection string.
 * Connecting gives up after `connectTimeoutMs` and each query after `queryTimeoutMs`, so a server
 * that accepts connections and never answers cannot hang a caller.
 * @throws KeelError `INVALID_CONFIG` for a bad schema name or timeout, `GROUP_STORE_UNAVAILABLE`
 *   (retryable) when the server cannot be reached in time, `GROUP_STORE_NOT_FOUND` (access
 *   `existing` or `read-only`) when the tables are not there, `GROUP_STORE_OPEN_FAILED` otherwise;
 *   each names the store without credentials.
 */
export async function postgresGroupRepository(
  url: string,
  options: PostgresGroupOptions = {},
): Promise<GroupRepository> {
  const access = checkAccess('groups store', options.access);
  const schema = options.schema;
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/i.test(schema)) {
    throw keelError(
      'INVALID_CONFIG',
      `groups store: invalid PostgreSQL schema name "${schema}": use letters, digits and _`,
    );
  }
  const location = redactPostgresUrl(url);
  const where = schema === undefined ? location : `${location} (schema ${schema})`;
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 4,
    connectionTimeoutMillis: positiveMs('connectTimeoutMs', options.connectTimeoutMs, 5000),
    query_timeout: positiveMs('queryTimeoutMs', options.queryTimeoutMs, 30_000),
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  // An idle client that loses its server must not crash the process; the next query reports it.
  pool.on('error', () => undefined);
  const driver: GroupSqlDriver = {
    kind: 'postgres',
    async all(sql, params = []) {
      return (await pool.query(toDollar(sql), [...params])).rows as Record<string, unknown>[];
    },
    async run(sql, params = []) {
      return (await pool.query(toDollar(sql), [...params])).rowCount ?? 0;
    },
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const result = await fn(clientDriver(client));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
  const repo = new SqlGroupRepository(driver, where);
  try {
    if (access !== 'create') {
      const version = await repo.schemaVersion();
      if (version === 0) throw notAStore('GROUP_STORE_NOT_FOUND', 'groups', where, 'no-keel-tables');
      if (access === 'read-only') {
        if (version < GROUPS_MIGRATIONS.length)
          throw notAStore('GROUP_STORE_NOT_FOUND', 'groups', where, 'old-schema');
        return repo;
      }
    }
    if (schema !== undefined && access === 'create')
      await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    // Two processes migrating at once: serialise with an advisory lock.
    const client = await pool.connect();
    try {
      await client.query(`SELECT pg_advisory_lock(hashtext('keel_groups_migrate'))`);
      await repo.migrate();
    } finally {
      await client.query(`SELECT pg_advisory_unlock(hashtext('keel_groups_migrate'))`).catch(() => undefined);
      client.release();
    }
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw openError(err, where);
  }
  return repo;
}
