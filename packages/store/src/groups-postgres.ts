import pg from 'pg';
import type { GroupRepository } from './groups-schema.js';
import { SqlGroupRepository, type GroupSqlDriver } from './groups-sql.js';

/** Options of {@link postgresGroupRepository}. */
export interface PostgresGroupOptions {
  /** A schema to keep the tables in (created if missing; default: the connection's search_path). */
  schema?: string;
  /** Connections in the pool (default 4). */
  maxConnections?: number;
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

/** Groups stored in PostgreSQL through a pg pool. `url` is a `postgres://` connection string. */
export async function postgresGroupRepository(
  url: string,
  options: PostgresGroupOptions = {},
): Promise<GroupRepository> {
  const schema = options.schema;
  if (schema !== undefined && !/^[a-z_][a-z0-9_]*$/i.test(schema)) {
    throw new Error(`invalid PostgreSQL schema name "${schema}": use letters, digits and _`);
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 4,
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  // An idle client that loses its server must not crash the process; the next query reports it.
  pool.on('error', () => undefined);
  if (schema !== undefined) await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
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
  const repo = new SqlGroupRepository(driver);
  // Two processes migrating at once: serialise with an advisory lock.
  const client = await pool.connect();
  try {
    await client.query(`SELECT pg_advisory_lock(hashtext('keel_groups_migrate'))`);
    await repo.migrate();
  } finally {
    await client.query(`SELECT pg_advisory_unlock(hashtext('keel_groups_migrate'))`).catch(() => undefined);
    client.release();
  }
  return repo;
}
