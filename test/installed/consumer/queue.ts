/** `@keel/queue` as installed: a typed payload enqueued, handled once, and the queue closed. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openQueue } from '@keel/queue';

interface Order {
  orderId: string;
}

const dir = await mkdtemp(path.join(tmpdir(), 'keel-installed-queue-'));
try {
  const q = await openQueue<Order>(path.join(dir, 'orders.db'), { name: 'orders' });
  const handled: string[] = [];
  const done = new Promise<void>((resolve) => {
    q.process(async ({ payload }) => {
      handled.push(payload.orderId);
      resolve();
      await Promise.resolve();
    });
  });
  await q.enqueue({ orderId: '42' }, { idempotencyKey: 'order-42' });
  await done;
  await q.close();
  assert.deepEqual(handled, ['42']);
} finally {
  await rm(dir, { recursive: true, force: true });
}
console.log('@keel/queue: ok');
