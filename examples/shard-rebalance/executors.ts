/**
 * The executors of a shard move. Each is idempotent in both directions, because a crash can
 * make either run twice: tables are created with IF NOT EXISTS and dropped with IF EXISTS, rows
 * are copied with ON CONFLICT DO NOTHING, and the routing update sets a value rather than
 * changing it relative to what it was.
 */
import type { ExecutorContext, ExecutorRegistry } from '@keel/groups';
import { catalogNode, table, withClient, type Nodes } from './cluster.js';

export interface ShardOnNode {
  node: string;
  shard: number;
}
export interface CopyPayload {
  from: string;
  to: string;
  shard: number;
}
export interface RoutePayload {
  shard: number;
  node: string;
}

/** Called before every forward operation: tests use it to cut a node, pause, stop or crash mid-way. */
export type BeforeOperation = (executor: string, ctx: ExecutorContext) => Promise<void> | void;

const CREATE = (shard: number): string =>
  `CREATE TABLE IF NOT EXISTS ${table(shard)} (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)`;

function urlOf(nodes: Nodes, node: string): string {
  const url = nodes[node];
  if (url === undefined) throw new Error(`unknown node ${node}`);
  return url;
}

/** Copies every row of a shard from one node to another, skipping rows already there. */
async function copyRows(nodes: Nodes, from: string, to: string, shard: number): Promise<void> {
  const rows = await withClient(
    urlOf(nodes, from),
    async (c) =>
      (await c.query<{ id: number; payload: string }>(`SELECT id, payload FROM ${table(shard)} ORDER BY id`))
        .rows,
  );
  await withClient(urlOf(nodes, to), async (c) => {
    await c.query('BEGIN');
    await c.query(CREATE(shard));
    await c.query(
      `INSERT INTO ${table(shard)} (id, payload) SELECT * FROM unnest($1::int[], $2::text[]) ON CONFLICT (id) DO NOTHING`,
      [rows.map((r) => r.id), rows.map((r) => r.payload)],
    );
    await c.query('COMMIT');
  });
}

/** Registers `shard.create`, `shard.copy`, `routing.set` and `shard.drop` for the cluster `nodes`. */
export function registerShardExecutors(
  registry: ExecutorRegistry,
  nodes: Nodes,
  beforeOperation?: BeforeOperation,
): ExecutorRegistry {
  const before = async (name: string, ctx: ExecutorContext): Promise<void> => {
    if (beforeOperation !== undefined) await beforeOperation(name, ctx);
  };
  registry.register<ShardOnNode, ShardOnNode>('shard.create', {
    async forward(p, ctx) {
      await before('shard.create', ctx);
      await withClient(urlOf(nodes, p.node), (c) => c.query(CREATE(p.shard)));
    },
    async rollback(p) {
      await withClient(urlOf(nodes, p.node), (c) => c.query(`DROP TABLE IF EXISTS ${table(p.shard)}`));
    },
  });
  registry.register<CopyPayload, ShardOnNode>('shard.copy', {
    async forward(p, ctx) {
      await before('shard.copy', ctx);
      await copyRows(nodes, p.from, p.to, p.shard);
    },
    async rollback(p) {
      // Empties the copy if the table is still there; the create's rollback drops it.
      await withClient(urlOf(nodes, p.node), async (c) => {
        const exists = await c.query('SELECT to_regclass($1) AS t', [table(p.shard)]);
        if ((exists.rows[0] as { t: string | null }).t !== null)
          await c.query(`DELETE FROM ${table(p.shard)}`);
      });
    },
  });
  registry.register<RoutePayload, RoutePayload>('routing.set', {
    async forward(p, ctx) {
      await before('routing.set', ctx);
      await withClient(catalogNode(nodes), (c) =>
        c.query('UPDATE shard_routing SET node = $2 WHERE shard = $1', [p.shard, p.node]),
      );
    },
    async rollback(p) {
      await withClient(catalogNode(nodes), (c) =>
        c.query('UPDATE shard_routing SET node = $2 WHERE shard = $1', [p.shard, p.node]),
      );
    },
  });
  registry.register<ShardOnNode, CopyPayload>('shard.drop', {
    async forward(p, ctx) {
      await before('shard.drop', ctx);
      await withClient(urlOf(nodes, p.node), (c) => c.query(`DROP TABLE IF EXISTS ${table(p.shard)}`));
    },
    async rollback(p) {
      // Undoing a drop: recreate the table on the source and copy the rows back from the target.
      await copyRows(nodes, p.from, p.to, p.shard);
    },
  });
  return registry;
}
