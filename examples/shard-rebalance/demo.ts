/**
 * Rebalances six shards from three PostgreSQL nodes onto a fourth, on the local server:
 * `node --import tsx examples/shard-rebalance/demo.ts [--hang] [postgres://postgres@127.0.0.1:5432/test]`.
 * Creates four databases `keel_demo_<random>_n1..n4` and drops them at the end.
 * With `--hang`, the rebalance runs in a worker process whose second operation hangs while the
 * worker stays alive and renews its lease: this process finds the group stuck by its progress,
 * takes it over and finishes it, and the hung operation is cancelled.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ExecutorRegistry, GroupManager, openGroupRepository } from '@keel/groups';
import { databaseUrl, seed, snapshot, withClient, type Nodes } from './cluster.js';
import { registerShardExecutors } from './executors.js';
import { planRebalance } from './plan.js';
import { startWorker } from './worker-process.js';

const args = process.argv.slice(2);
const hang = args.includes('--hang');
const server = args.find((a) => a !== '--hang') ?? 'postgres://postgres@127.0.0.1:5432/test';
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

/**
 * Runs the group in a worker process that hangs before operation 1, finds the group stuck by its
 * progress (the worker's lease stays renewed), recovers it here and waits for the worker to end.
 */
async function rescueHungWorker(manager: GroupManager, id: string): Promise<{ status: string }> {
  const { child: worker, output, exited } = startWorker(path.join(dir, 'groups.db'), id, nodes, 1);
  console.log(`worker ${String(worker.pid)} runs the group; its operation 1 will hang`);
  const started = Date.now();
  let diagnosis = await manager.diagnose(id);
  while (diagnosis.stuck === false) {
    await new Promise((r) => setTimeout(r, 200));
    diagnosis = await manager.diagnose(id);
  }
  console.log(`after ${String(Date.now() - started)} ms: ${diagnosis.summary}`);
  const report = await manager.recover({ backoffMs: 0 });
  for (const a of report.actions) console.log(`recovery: ${a.action} by ${a.strategy}`);
  await exited;
  console.log(`worker said: ${output.text.trim().split('\n').join(' | ')}`);
  return { status: (await manager.get(id))?.status ?? 'unknown' };
}

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
  const manager = new GroupManager({ repository, executors, stuckAfterMs: 2000 });
  const id = await manager.create(planRebalance(before.routing, ['n1', 'n2', 'n3'], 'n4'));
  const outcome = hang ? await rescueHungWorker(manager, id) : await manager.run(id);
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
