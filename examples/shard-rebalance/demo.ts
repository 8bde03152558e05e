/**
 * Rebalances six shards from three PostgreSQL nodes onto a fourth, on the local server:
 * `node --import tsx examples/shard-rebalance/demo.ts [postgres://postgres@127.0.0.1:5432/test]`.
 * Creates four databases `keel_demo_<random>_n1..n4` and drops them at the end.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ExecutorRegistry, GroupManager, openGroupRepository } from '@keel/groups';
import { databaseUrl, seed, snapshot, withClient, type Nodes } from './cluster.js';
import { registerShardExecutors } from './executors.js';
import { planRebalance } from './plan.js';

const server = process.argv[2] ?? 'postgres://postgres@127.0.0.1:5432/test';
const prefix = `keel_demo_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
const names = ['n1', 'n2', 'n3', 'n4'];
const nodes: Nodes = Object.fromEntries(names.map((n) => [n, databaseUrl(server, `${prefix}_${n}`)]));
const dir = await mkdtemp(path.join(tmpdir(), 'keel-demo-'));
const repository = await openGroupRepository(path.join(dir, 'groups.db'));

const shardsPerNode = (routing: Record<string, string>): string =>
  names
    .map(
      (n) =>
        `${n}: [${Object.keys(routing)
          .filter((s) => routing[s] === n)
          .join(', ')}]`,
    )
    .join('  ');

try {
  await withClient(server, async (c) => {
    for (const n of names) await c.query(`CREATE DATABASE ${prefix}_${n}`);
  });
  await seed(nodes, { 1: 'n1', 2: 'n1', 3: 'n2', 4: 'n2', 5: 'n3', 6: 'n3' }, 1000);
  const before = await snapshot(nodes);
  console.log(`before   ${shardsPerNode(before.routing)}`);

  const executors = registerShardExecutors(new ExecutorRegistry(), nodes, (name, ctx) => {
    console.log(`  op ${String(ctx.seq)}: ${name} ${ctx.target}`);
  });
  const manager = new GroupManager({ repository, executors });
  const id = await manager.create(planRebalance(before.routing, ['n1', 'n2', 'n3'], 'n4'));
  const outcome = await manager.run(id);
  const progress = await manager.progress(id);
  console.log(
    `group ${id}: ${outcome.status}, ${String(progress.done)}/${String(progress.total)} operations`,
  );

  const after = await snapshot(nodes);
  console.log(`after    ${shardsPerNode(after.routing)}`);
  const rows = (s: typeof after): number =>
    Object.values(s.tables).reduce(
      (sum, t) => sum + Object.values(t).reduce((a, ids) => a + ids.length, 0),
      0,
    );
  console.log(`rows: ${String(rows(before))} before, ${String(rows(after))} after`);
} finally {
  await repository.close();
  await rm(dir, { recursive: true, force: true });
  await withClient(server, async (c) => {
    for (const n of names) await c.query(`DROP DATABASE IF EXISTS ${prefix}_${n} WITH (FORCE)`);
  });
}
