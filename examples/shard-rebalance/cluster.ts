/**
 * A tiny sharded "cluster" on one PostgreSQL server: each node is a database, each shard a table
 * `items_<n>` on one node, and a routing table `shard_routing` on the first node says where each
 * shard lives. Connections are made per call, so cutting a node's address cuts that node.
 */
import pg from 'pg';

/** Node name → connection string. The first node also holds the routing table. */
export type Nodes = Record<string, string>;

/** What a cluster looks like: where each shard is routed, and each node's shard tables with their rows. */
export interface Snapshot {
  routing: Record<string, string>;
  /** node → shard → sorted row ids. */
  tables: Record<string, Record<string, number[]>>;
}

export const table = (shard: number): string => `items_${String(shard)}`;

/** Runs `fn` with a fresh connection to `url` (closed after); connects within 1 s or fails. */
export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Connection string of `database` on the server of `base` (optionally through another host:port). */
export function databaseUrl(base: string, database: string, hostPort?: string): string {
  const url = new URL(base);
  url.pathname = `/${database}`;
  if (hostPort !== undefined) url.host = hostPort;
  return url.toString();
}

export function catalogNode(nodes: Nodes): string {
  const first = Object.values(nodes)[0];
  if (first === undefined) throw new Error('a cluster needs at least one node');
  return first;
}

/** Creates the shard tables and routing for `placement` (shard → node) with `rowsPerShard` rows each. */
export async function seed(
  nodes: Nodes,
  placement: Record<number, string>,
  rowsPerShard: number,
): Promise<void> {
  await withClient(catalogNode(nodes), async (c) => {
    await c.query('CREATE TABLE IF NOT EXISTS shard_routing (shard INTEGER PRIMARY KEY, node TEXT NOT NULL)');
    await c.query('TRUNCATE shard_routing');
  });
  for (const url of Object.values(nodes)) {
    await withClient(url, async (c) => {
      const rows = await c.query<{ tablename: string }>(
        `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'items\\_%'`,
      );
      for (const r of rows.rows) await c.query(`DROP TABLE ${r.tablename}`);
    });
  }
  for (const [shardText, node] of Object.entries(placement)) {
    const shard = Number(shardText);
    const url = nodes[node];
    if (url === undefined) throw new Error(`no node ${node}`);
    await withClient(url, async (c) => {
      await c.query(`CREATE TABLE ${table(shard)} (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)`);
      await c.query(
        `INSERT INTO ${table(shard)} SELECT g, 'row ' || g FROM generate_series($1::int, $2::int) g`,
        [shard * 1000, shard * 1000 + rowsPerShard - 1],
      );
    });
    await withClient(catalogNode(nodes), (c) =>
      c.query('INSERT INTO shard_routing (shard, node) VALUES ($1, $2)', [shard, node]),
    );
  }
}

/** Reads the routing table and every node's shard tables. */
export async function snapshot(nodes: Nodes): Promise<Snapshot> {
  const routing: Record<string, string> = {};
  await withClient(catalogNode(nodes), async (c) => {
    const rows = await c.query<{ shard: number; node: string }>(
      'SELECT shard, node FROM shard_routing ORDER BY shard',
    );
    for (const r of rows.rows) routing[String(r.shard)] = r.node;
  });
  const tables: Snapshot['tables'] = {};
  for (const [name, url] of Object.entries(nodes)) {
    tables[name] = {};
    await withClient(url, async (c) => {
      const list = await c.query<{ tablename: string }>(
        `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'items\\_%' ORDER BY tablename`,
      );
      for (const t of list.rows) {
        const ids = await c.query<{ id: number }>(`SELECT id FROM ${t.tablename} ORDER BY id`);
        (tables[name] as Record<string, number[]>)[t.tablename.slice('items_'.length)] = ids.rows.map(
          (r) => r.id,
        );
      }
    });
  }
  return { routing, tables };
}
