import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classify } from 'keel';
import { PG_URL, postgresAvailable } from './pg-support.js';

// Real errors from the local PostgreSQL and the pg client, classified by keel.
const available = await postgresAvailable('the PostgreSQL error classification tests');

async function failure(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

describe.skipIf(!available)('classify() of PostgreSQL errors', () => {
  const table = `keel_classify_${randomUUID().replaceAll('-', '')}`;
  let client: pg.Client;
  beforeAll(async () => {
    client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`);
    await client.query(`INSERT INTO ${table} VALUES (1)`);
  });
  afterAll(async () => {
    await client.query(`DROP TABLE IF EXISTS ${table}`);
    await client.end();
  });

  it('a unique violation is a conflict, not retried', async () => {
    const e = classify(await failure(() => client.query(`INSERT INTO ${table} VALUES (1)`)));
    expect(e).toMatchObject({ code: 'CONFLICT', retryable: false, details: { sqlState: '23505' } });
  });

  it('a syntax error or a missing table is invalid input, not retried', async () => {
    expect(classify(await failure(() => client.query('SELEC 1')))).toMatchObject({
      code: 'INVALID_INPUT',
      retryable: false,
    });
    expect(classify(await failure(() => client.query(`SELECT * FROM ${table}_missing`)))).toMatchObject({
      code: 'INVALID_INPUT',
      retryable: false,
    });
  });

  it('a statement timeout is a retryable timeout', async () => {
    await client.query('SET statement_timeout = 50');
    try {
      const e = classify(await failure(() => client.query('SELECT pg_sleep(5)')));
      expect(e).toMatchObject({ code: 'TIMEOUT', retryable: true, details: { sqlState: '57014' } });
    } finally {
      await client.query('SET statement_timeout = 0');
    }
  });

  it('a terminated backend and the dead connection after it are retryable', async () => {
    const victim = new pg.Client({ connectionString: PG_URL });
    await victim.connect();
    const errors: unknown[] = [];
    victim.on('error', (err) => errors.push(err));
    const pid = (await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
    const running = failure(() => victim.query('SELECT pg_sleep(30)'));
    // Terminate the backend once it is running the statement, so it is cut off mid-query.
    const isRunning = async (): Promise<boolean> =>
      (
        await client.query<{ state: string | null }>('SELECT state FROM pg_stat_activity WHERE pid = $1', [
          pid,
        ])
      ).rows[0]?.state === 'active';
    while (!(await isRunning())); // each look is a round trip to the server
    await client.query('SELECT pg_terminate_backend($1)', [pid]);
    const terminated = classify(await running);
    expect(terminated.retryable).toBe(true);
    expect(['SERVICE_UNAVAILABLE', 'NETWORK_RESET']).toContain(terminated.code);
    const after = classify(await failure(() => victim.query('SELECT 1')));
    expect(after.retryable).toBe(true);
    expect(after.code).toBe('NETWORK_RESET');
    for (const err of errors) expect(classify(err).retryable).toBe(true);
    await victim.end().catch(() => undefined);
  });

  it('a database that does not exist is a configuration error naming it', async () => {
    const url = new URL(PG_URL);
    url.pathname = `/${table}_nodb`;
    const other = new pg.Client({ connectionString: url.toString() });
    const e = classify(await failure(() => other.connect()));
    expect(e).toMatchObject({ code: 'INVALID_CONFIG', retryable: false });
    await other.end().catch(() => undefined);
  });
});

describe('classify() of pg client messages', () => {
  it.each([
    ['Connection terminated unexpectedly', 'NETWORK_RESET'],
    ['Connection terminated', 'NETWORK_RESET'],
    ['Client has encountered a connection error and is not queryable', 'NETWORK_RESET'],
    ['timeout exceeded when trying to connect', 'TIMEOUT'],
    ['Query read timeout', 'TIMEOUT'],
  ])('%s → %s, retryable', (message, code) => {
    expect(classify(new Error(message))).toMatchObject({ code, retryable: true });
  });

  it('leaves other plain errors unknown', () => {
    expect(classify(new Error('Connection was fine')).code).toBe('UNKNOWN');
  });
});
