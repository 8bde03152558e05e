import pg from 'pg';

/** The local PostgreSQL of DESIGN.md. */
export const PG_URL = process.env.KEEL_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Whether PostgreSQL answers. Without it the tests named by `what` skip with a loud message, and
 * fail instead when CI is set.
 */
export async function postgresAvailable(what = 'PostgreSQL tests', url = PG_URL): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch (err) {
    if (process.env.CI) throw new Error(`PostgreSQL is required in CI but ${url} failed: ${String(err)}`);
    console.warn(`\n*** SKIPPING ${what}: ${url} is not reachable (${String(err)}) ***\n`);
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}
