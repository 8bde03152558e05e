/**
 * A worker process that runs one stored rebalance group:
 * `node --import tsx examples/shard-rebalance/worker.ts <store> <groupId> <nodes-json> [hang-at-seq]`.
 * With `hang-at-seq` it prints `AT <seq>` and hangs before that operation (for crash tests).
 */
import { ExecutorRegistry, GroupManager, openGroupRepository } from '@keel/groups';
import type { Nodes } from './cluster.js';
import { registerShardExecutors } from './executors.js';

const [store, groupId, nodesJson, hangAt] = process.argv.slice(2);
if (store === undefined || groupId === undefined || nodesJson === undefined) {
  process.stderr.write('usage: worker.ts <store> <groupId> <nodes-json> [hang-at-seq]\n');
  process.exit(2);
}
const nodes = JSON.parse(nodesJson) as Nodes;
const executors = registerShardExecutors(new ExecutorRegistry(), nodes, async (_name, ctx) => {
  if (hangAt !== undefined && ctx.seq === Number(hangAt)) {
    process.stdout.write(`AT ${String(ctx.seq)}\n`);
    await new Promise(() => undefined);
  }
});
const repository = await openGroupRepository(store);
const manager = new GroupManager({
  repository,
  executors,
  leaseMs: 1000,
  owner: `worker-${String(process.pid)}`,
});
const outcome = await manager.run(groupId);
process.stdout.write(`DONE ${outcome.status}\n`);
await repository.close();
