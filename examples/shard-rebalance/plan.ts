/** Plans a rebalance onto a new node as a group of operations. */
import type { GroupDefinition, OperationSpec } from '@keel/groups';
import type { CopyPayload, RoutePayload, ShardOnNode } from './executors.js';

/** The four operations that move one shard, each with its rollback. */
export function moveShard(shard: number, from: string, to: string): OperationSpec[] {
  return [
    {
      executor: 'shard.create',
      target: `${to}/${String(shard)}`,
      forward: { node: to, shard } satisfies ShardOnNode,
      rollback: { node: to, shard } satisfies ShardOnNode,
    },
    {
      executor: 'shard.copy',
      target: `${from}→${to}/${String(shard)}`,
      forward: { from, to, shard } satisfies CopyPayload,
      rollback: { node: to, shard } satisfies ShardOnNode,
    },
    {
      executor: 'routing.set',
      target: `routing/${String(shard)}`,
      forward: { shard, node: to } satisfies RoutePayload,
      rollback: { shard, node: from } satisfies RoutePayload,
    },
    {
      executor: 'shard.drop',
      target: `${from}/${String(shard)}`,
      forward: { node: from, shard } satisfies ShardOnNode,
      rollback: { from: to, to: from, shard } satisfies CopyPayload,
    },
  ];
}

/**
 * Moves shards from the fullest nodes to `newNode` until no node holds more than one shard more
 * than another. `routing` is shard → node.
 */
export function planRebalance(
  routing: Record<string, string>,
  nodes: readonly string[],
  newNode: string,
): GroupDefinition {
  const byNode = new Map<string, number[]>(nodes.map((n) => [n, []]));
  byNode.set(newNode, []);
  for (const [shard, node] of Object.entries(routing)) byNode.get(node)?.push(Number(shard));
  const steps: OperationSpec[] = [];
  for (;;) {
    const sorted = [...byNode.entries()].sort(
      (a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]),
    );
    const fullest = sorted[0];
    const target = byNode.get(newNode) ?? [];
    if (fullest === undefined || fullest[1].length - target.length <= 1) break;
    const shard = fullest[1].pop() as number;
    target.push(shard);
    steps.push(...moveShard(shard, fullest[0], newNode));
  }
  return { name: `rebalance onto ${newNode}`, steps };
}
