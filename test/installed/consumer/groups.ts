/** `@keel/groups` as installed: a two-step group runs to completion on SQLite. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ExecutorRegistry, GroupManager, openGroupRepository } from '@keel/groups';

const dir = await mkdtemp(path.join(tmpdir(), 'keel-installed-groups-'));
try {
  const done: string[] = [];
  const executors = new ExecutorRegistry().register('note', {
    forward: async (p: { text: string }) => {
      done.push(p.text);
      await Promise.resolve();
    },
  });
  const repository = await openGroupRepository(path.join(dir, 'groups.db'));
  const groups = new GroupManager({ repository, executors });
  const id = await groups.create({
    name: 'installed',
    steps: [
      { executor: 'note', target: 'one', forward: { text: 'first' } },
      [
        { executor: 'note', target: 'two', forward: { text: 'second' } },
        { executor: 'note', target: 'three', forward: { text: 'third' } },
      ],
    ],
  });
  const outcome = await groups.run(id);
  assert.equal(outcome.status, 'completed');
  assert.deepEqual(done.sort(), ['first', 'second', 'third']);
  await groups.close();
  await repository.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
console.log('@keel/groups: ok');
