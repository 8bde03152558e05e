/**
 * `@keel/fleet` as installed: two RedisCoordinators of one fleet (under a key prefix of this run's
 * own, so no other run or fleet shares their keys) take turns on a lease (one leads, the other
 * follows until the leader is done, then leads itself), pass an invalidation (answered once the
 * other instance heard it) and are listed by readFleetStatus until they close. A coordinator
 * whose Redis cannot be reached coordinates through its fallback. Without a Redis from the script,
 * only that last part runs.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { readFleetStatus, RedisCoordinator, type Coordinator, type Lease, type ObjectRef } from '@keel/fleet';

/** The fallback a user writes for one process alone: it leads every lease itself. */
class Alone implements Coordinator {
  readonly kind = 'alone';
  leases = 0;
  lease(): Promise<Lease> {
    this.leases++;
    return Promise.resolve({ role: 'leader', done: () => undefined });
  }
  invalidate(): Promise<void> {
    return Promise.resolve();
  }
  onInvalidate(): () => void {
    return () => undefined;
  }
  publishBreaker(): void {}
  onBreaker(): () => void {
    return () => undefined;
  }
  publishBudget(): void {}
  onBudget(): () => void {
    return () => undefined;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function twoInstances(url: string): Promise<void> {
  const prefix = `keel-installed-${randomUUID().slice(0, 8)}`;
  const options = { url, prefix, leaseTtlMs: 2_000 };
  const [fallbackA, fallbackB] = [new Alone(), new Alone()];
  const a = new RedisCoordinator({ ...options, fallback: fallbackA });
  const b = new RedisCoordinator({ ...options, fallback: fallbackB });
  try {
    assert.deepEqual(await a.start(), { available: true });
    assert.deepEqual(await b.start(), { available: true });

    const leader = await a.lease('slice-1');
    const follower = await b.lease('slice-1');
    assert(leader.role === 'leader', `a took the free lease, got ${leader.role}`);
    assert(follower.role === 'follower', `b found it held, got ${follower.role}`);
    leader.done(true);
    assert.equal(await follower.settled, true);
    const next = await b.lease('slice-1');
    assert(next.role === 'leader', `b took the released lease, got ${next.role}`);
    next.done(true);
    assert.equal(fallbackA.leases + fallbackB.leases, 0, 'no lease went to a fallback');

    const heard: ObjectRef[] = [];
    b.onInvalidate((id) => {
      heard.push(id);
    });
    await a.invalidate({ bucket: 'data', key: 'train/shard-0001.tar' });
    assert.deepEqual(heard, [{ bucket: 'data', key: 'train/shard-0001.tar' }]);

    const live = await readFleetStatus(url, prefix);
    assert.deepEqual(live.map((i) => i.id).sort(), [a.id, b.id].sort());
  } finally {
    await a.close();
    await b.close();
  }
  assert.deepEqual(await readFleetStatus(url, prefix), [], 'closing removes the heartbeats');
}

/** A coordinator whose Redis refuses connections: it says so, and leases go to its fallback. */
async function withoutRedis(): Promise<void> {
  const gone = createServer();
  await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
  const port = (gone.address() as AddressInfo).port;
  await new Promise((resolve) => gone.close(resolve));
  const fallback = new Alone();
  const c = new RedisCoordinator({ url: `redis://127.0.0.1:${port}`, fallback });
  try {
    const status = await c.start();
    assert.equal(status.available, false);
    const lease = await c.lease('slice-1');
    assert.equal(lease.role, 'leader');
    assert.equal(fallback.leases, 1);
  } finally {
    await c.close();
  }
}

await withoutRedis();
const url = process.env.KEEL_INSTALLED_REDIS_URL;
if (url !== undefined) {
  await twoInstances(url);
  console.log('@keel/fleet: ok (Redis unreachable, and two instances on Redis)');
} else {
  console.log('@keel/fleet: ok (Redis unreachable; no Redis given)');
}
