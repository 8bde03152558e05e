import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { ExecutorRegistry, GroupManager, openGroupRepository, type GroupRepository } from '@keel/groups';
import { AutoRecovery, HealthRegistry } from '@keel/ops';
import { VirtualClock } from 'keel';
import { until } from './groups-support.js';

let dir: string;
let repo: GroupRepository;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keel-groups-ops-'));
  repo = await openGroupRepository(path.join(dir, 'groups.db'));
});

afterEach(async () => {
  await repo.close();
  await rm(dir, { recursive: true, force: true });
});

it('registers as an ops health check whose auto-recovery finishes a crashed group', async () => {
  const clock = new VirtualClock(1_000_000);
  const done: string[] = [];
  const executors = new ExecutorRegistry().register<string, null>('note', {
    forward: (p) => {
      done.push(p);
      return Promise.resolve();
    },
  });
  const manager = new GroupManager({ repository: repo, executors, clock, leaseMs: 1000 });
  const id = await manager.create({
    name: 'crashed',
    steps: [
      { executor: 'note', target: 'a', forward: 'a' },
      { executor: 'note', target: 'b', forward: 'b' },
    ],
  });
  // a worker died in the middle of operation a
  await repo.updateGroup(id, { status: 'running', startedAt: clock.now() });
  await repo.acquireLease(id, 'dead', clock.now(), clock.now() + 1000);
  await repo.updateOperation(id, 0, { status: 'running' });
  await clock.advance(1001);

  const health = new HealthRegistry({ clock });
  const check = manager.healthCheck();
  health.register(check);
  const recovery = new AutoRecovery(health, { check: check.name, action: check.action, clock });
  const before = await health.report();
  expect(before.status).toBe('fail');
  expect(JSON.stringify(before.checks)).toContain('1 stuck group(s)');

  await until(async () => {
    await clock.advance(1000);
    return (await manager.get(id))?.status === 'completed';
  }, 'auto-recovery to complete the group');
  expect(done).toEqual(['a', 'b']);
  expect((await health.report()).status).toBe('pass');
  recovery.close();
});
