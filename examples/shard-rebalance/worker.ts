/**
 * A worker process that runs one stored rebalance group:
 * `node --import tsx examples/shard-rebalance/worker.ts <store> <groupId> <nodes-json> [hang-at-seq]`.
 * With `hang-at-seq` it prints `AT <seq>` and hangs before that operation (for crash and stuck
 * tests) until the operation's signal aborts. It prints `DONE <status>` when the run ends, or
 * `LOST <code>` when the group was taken from it (by recovery, after it made no progress).
 */
import { isKeelError } from 'keel';
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
    // Hangs like a stalled statement: only the operation's signal ends it.
    await new Promise<never>((_, reject) => {
      ctx.signal.addEventListener('abort', () => {
        reject(ctx.signal.reason as Error);
      });
    });
  }
});
const repository = await openGroupRepository(store, { access: 'existing' });
const manager = new GroupManager({
  repository,
  executors,
  leaseMs: 1000,
  owner: `worker-${String(process.pid)}`,
});
try {
  const outcome = await manager.run(groupId);
  process.stdout.write(`DONE ${outcome.status}\n`);
} catch (err) {
  if (!isKeelError(err)) throw err;
  process.stdout.write(`LOST ${err.code}\n`);
} finally {
  await repository.close();
}
