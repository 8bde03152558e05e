import { EventEmitter } from 'node:events';
import type { Worker } from 'node:cluster';
import { describe, expect, it } from 'vitest';
import { ClusterCoordination } from './cluster-coordination.js';
import { ClusterCoordinator } from './cluster-coordinator.js';

/** N workers' coordinators joined to one primary by an in-memory channel (ordered, copied, async). */
function host(n: number): ClusterCoordinator[] {
  const primary = new ClusterCoordination();
  return Array.from({ length: n }, (_, i) => {
    const toWorker = new Set<(m: unknown) => void>();
    const fake = Object.assign(new EventEmitter(), {
      id: i + 1,
      isConnected: () => true,
      send(m: unknown): boolean {
        setImmediate(() => {
          for (const l of toWorker) l(JSON.parse(JSON.stringify(m)));
        });
        return true;
      },
    });
    primary.add(fake as unknown as Worker);
    return new ClusterCoordinator(
      // node:cluster's IPC serialises as JSON: NaN arrives as null.
      (m) => setImmediate(() => fake.emit('message', JSON.parse(JSON.stringify(m)))),
      (l) => {
        toWorker.add(l);
        return () => toWorker.delete(l);
      },
    );
  });
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 6; i++) await new Promise((r) => setImmediate(r));
};

describe('ClusterCoordination: retry-budget changes', () => {
  it("passes a worker's change to every other worker, not back to it, and drops one that is not a number", async () => {
    const [a, b, c] = host(3) as [ClusterCoordinator, ClusterCoordinator, ClusterCoordinator];
    const heard: string[] = [];
    a.onBudget((name, tokens) => heard.push(`a ${name} ${tokens}`));
    b.onBudget((name, tokens) => heard.push(`b ${name} ${tokens}`));
    const stopC = c.onBudget((name, tokens) => heard.push(`c ${name} ${tokens}`));
    a.publishBudget('origin', -12.5);
    b.publishBudget('origin', Number.NaN);
    await settle();
    expect(heard.sort()).toEqual(['b origin -12.5', 'c origin -12.5']);
    stopC();
    heard.length = 0;
    b.publishBudget('origin', 3);
    await settle();
    expect(heard).toEqual(['a origin 3']);
    await Promise.all([a.close(), b.close(), c.close()]);
  });
});
