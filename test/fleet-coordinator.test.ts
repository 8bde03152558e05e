import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EVICTOR_LOCK, FileLocks } from 'keel/cache';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  parseRedisUrl,
  readFleetStatus,
  redactRedisUrl,
  RedisCoordinator,
  type Coordinator,
  type CoordinatorAvailability,
  type Lease,
  type ObjectRef,
  type RedisCoordinatorOptions,
} from '@keel/fleet';
import {
  dropPrefix,
  freePort,
  kill,
  REDIS_URL,
  redisReachable,
  startRedisServer,
  testPrefix,
} from './redis-support.js';
import { coordinatedLocks } from '../packages/gateway/src/coord/coordinated-locks.js';

/** One process alone (the gateway's LocalCoordinator): it leads every lease, tells nobody anything. */
function alone(): Coordinator & { invalidated: ObjectRef[] } {
  const invalidated: ObjectRef[] = [];
  return {
    kind: 'local',
    invalidated,
    lease: () => Promise.resolve({ role: 'leader', done: () => undefined }),
    invalidate: (id) => {
      invalidated.push(id);
      return Promise.resolve();
    },
    onInvalidate: () => () => undefined,
    publishBreaker: () => undefined,
    onBreaker: () => () => undefined,
    publishBudget: () => undefined,
    onBudget: () => () => undefined,
    close: () => Promise.resolve(),
  };
}

const withRedis = await redisReachable();
const prefix = testPrefix();
const open: RedisCoordinator[] = [];

async function coordinator(extra: Partial<RedisCoordinatorOptions> = {}): Promise<RedisCoordinator> {
  const c = new RedisCoordinator({
    url: REDIS_URL,
    prefix,
    fallback: alone(),
    leaseTtlMs: 600,
    leaseCheckMs: 50,
    heartbeatMs: 200,
    ...extra,
  });
  open.push(c);
  await c.start();
  // A first heartbeat slower than the command timeout (a loaded machine) joins at the next one.
  await expect.poll(() => c.status.available, { timeout: 5_000 }).toBe(true);
  return c;
}

function settledWithin(lease: Lease, ms: number): Promise<boolean | 'pending'> {
  if (lease.role !== 'follower') throw new Error('expected a follower');
  return Promise.race([lease.settled, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  if (withRedis) await dropPrefix(prefix);
});

describe.skipIf(!withRedis)('RedisCoordinator against the real Redis', () => {
  it('gives a lease to one instance; the other follows and is told when the leader is done', async () => {
    const [a, b] = [await coordinator(), await coordinator()];
    expect(a.status).toEqual({ available: true });
    const first = await a.lease('slice-1');
    const second = await b.lease('slice-1');
    expect(first.role).toBe('leader');
    expect(second.role).toBe('follower');
    expect(await settledWithin(second, 100)).toBe('pending');
    if (first.role === 'leader') first.done(true);
    expect(await settledWithin(second, 2_000)).toBe(true);
    // Released: the next to ask leads.
    expect((await b.lease('slice-1')).role).toBe('leader');
  });

  it('keeps a held lease past its TTL by renewing it', async () => {
    const [a, b] = [await coordinator(), await coordinator()];
    const held = await a.lease('renewed');
    await new Promise((r) => setTimeout(r, 1_500));
    const other = await b.lease('renewed');
    expect(other.role).toBe('follower');
    if (held.role === 'leader') held.done(false);
    expect(await settledWithin(other, 2_000)).toBe(false);
  });

  it('lets a follower go on within the lease when its leader dies without a word', async () => {
    const [a, b] = [await coordinator(), await coordinator()];
    expect((await a.lease('orphan')).role).toBe('leader');
    // The leader's process stops renewing (as a SIGKILLed one does) and never says it is done.
    (a as unknown as { leases: { close(): void } }).leases.close();
    const follower = await b.lease('orphan');
    const started = Date.now();
    expect(await settledWithin(follower, 3_000)).toBe(false);
    expect(Date.now() - started).toBeLessThan(600 + 500);
    expect((await b.lease('orphan')).role).toBe('leader');
  });

  it('answers an invalidation once every live instance dropped the object', async () => {
    const [a, b, c] = [await coordinator(), await coordinator(), await coordinator()];
    const dropped: string[] = [];
    for (const [name, co] of [
      ['b', b],
      ['c', c],
    ] as const)
      co.onInvalidate(async (id) => {
        await new Promise((r) => setTimeout(r, 100));
        dropped.push(`${name}:${id.bucket}/${id.key}`);
      });
    await a.invalidate({ bucket: 'bkt', key: 'k' });
    expect(dropped.sort()).toEqual(['b:bkt/k', 'c:bkt/k']);
  });

  it('waits at most invalidateWaitMs for an instance whose heartbeat is live but which does not answer', async () => {
    const a = await coordinator({ invalidateWaitMs: 300 });
    const b = await coordinator();
    b.onInvalidate(() => new Promise(() => undefined));
    const started = Date.now();
    await a.invalidate({ bucket: 'bkt', key: 'stuck' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(280);
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it('shares breaker states: published on change, read by an instance that joins later', async () => {
    const a = await coordinator();
    const b = await coordinator();
    const heard: string[] = [];
    b.onBreaker((name, s) => heard.push(`${name}:${s.state}`));
    a.publishBreaker('origin/bkt', { state: 'open', openUntil: Date.now() + 5_000 });
    await expect.poll(() => heard).toEqual(['origin/bkt:open']);
    const late: string[] = [];
    const c = new RedisCoordinator({ url: REDIS_URL, prefix, fallback: alone(), heartbeatMs: 200 });
    open.push(c);
    c.onBreaker((name, s) => late.push(`${name}:${s.state}`));
    await c.start();
    expect(late).toEqual(['origin/bkt:open']);
    a.publishBreaker('origin/bkt', { state: 'closed' });
    await expect.poll(() => heard).toEqual(['origin/bkt:open', 'origin/bkt:closed']);
  });

  it('passes retry-budget changes to the other instances, not back to their sender', async () => {
    const [a, b] = [await coordinator(), await coordinator()];
    const heardA: string[] = [];
    const heardB: string[] = [];
    a.onBudget((name, tokens) => heardA.push(`${name}:${tokens}`));
    b.onBudget((name, tokens) => heardB.push(`${name}:${tokens}`));
    a.publishBudget('origin', -3);
    b.publishBudget('origin', 0.5);
    await expect.poll(() => [heardA, heardB]).toEqual([['origin:0.5'], ['origin:-3']]);
  });

  it('lists live instances with their status; a closed one leaves the list', async () => {
    const a = await coordinator({
      status: () => ({ port: 1234, fillsInFlight: 2, breakers: { bkt: 'open' } }),
    });
    const b = await coordinator();
    const live = await readFleetStatus(REDIS_URL, prefix);
    expect(live.map((i) => i.id).sort()).toEqual([a.id, b.id].sort());
    expect(live.find((i) => i.id === a.id)).toMatchObject({
      port: 1234,
      fillsInFlight: 2,
      breakers: { bkt: 'open' },
      pid: process.pid,
    });
    await b.close();
    expect((await readFleetStatus(REDIS_URL, prefix)).map((i) => i.id)).toEqual([a.id]);
  });
});

describe.skipIf(!withRedis)('RedisCoordinator when its Redis dies', () => {
  let port: number;
  let server: ChildProcess | undefined;

  beforeAll(async () => {
    port = await freePort();
    server = await startRedisServer(port);
  });
  afterAll(async () => {
    if (server) await kill(server);
  });

  it('falls back at once, tells its listeners, and rejoins when Redis returns', async () => {
    const url = `redis://127.0.0.1:${port}`;
    const fallback = alone();
    const a = await coordinator({ url, fallback, maxReconnectDelayMs: 100 });
    const b = await coordinator({ url, maxReconnectDelayMs: 100 });
    const seen: CoordinatorAvailability[] = [];
    a.onAvailability((s) => seen.push(s));
    expect((await a.lease('k')).role).toBe('leader');
    const waiting = await b.lease('k');
    expect(waiting.role).toBe('follower');
    if (server) await kill(server);
    // The follower does not wait for a leader it cannot hear from.
    expect(await settledWithin(waiting, 2_000)).toBe(false);
    await expect.poll(() => a.status.available, { timeout: 3_000 }).toBe(false);
    expect(seen).toHaveLength(1);
    // Alone: every lease is led here, an invalidation goes to the fallback only and answers at once.
    expect((await b.lease('k')).role).toBe('leader');
    const started = Date.now();
    await a.invalidate({ bucket: 'b', key: 'k' });
    expect(Date.now() - started).toBeLessThan(200);
    expect(fallback.invalidated).toEqual([{ bucket: 'b', key: 'k' }]);
    server = await startRedisServer(port);
    await expect.poll(() => a.status.available && b.status.available, { timeout: 5_000 }).toBe(true);
    expect(seen.map((s) => s.available)).toEqual([false, true]);
    expect((await a.lease('again')).role).toBe('leader');
    expect((await b.lease('again')).role).toBe('follower');
  });
});

describe('coordinator URLs', () => {
  it.each([
    ['http://127.0.0.1:6379', 'expected a redis:// or rediss:// URL'],
    ['redis:///0', 'no host'],
    ['redis://user:s3cret@/0', 'not a URL'],
    ['redis://:s3cret@127.0.0.1:6379/x', 'database number'],
    ['not a url s3cret', 'not a URL'],
  ])('refuses %s with a message that never shows the password', (url, message) => {
    expect(() => parseRedisUrl(url)).toThrow(message);
    try {
      parseRedisUrl(url);
    } catch (err) {
      expect((err as Error).message).not.toContain('s3cret');
    }
  });

  it('accepts redis:// and rediss:// URLs and redacts their passwords', () => {
    expect(parseRedisUrl('rediss://default:pw@cache.internal:6380/2')).toBe(
      'rediss://default:pw@cache.internal:6380/2',
    );
    expect(redactRedisUrl('redis://default:pw@cache.internal:6380/2')).toBe(
      'redis://default:***@cache.internal:6380/2',
    );
    expect(redactRedisUrl('redis://token@cache.internal')).toBe('redis://***@cache.internal');
  });
});

describe.skipIf(!withRedis)('the cache evictor elected through RedisCoordinator', () => {
  it('lets one instance evict at a time across hosts whose lock files are not shared', async () => {
    // Two directories stand for two hosts: their lock files cannot see each other.
    const dirs = await Promise.all([0, 1].map(() => mkdtemp(path.join(os.tmpdir(), 'keel-fleet-evictor-'))));
    try {
      const [a, b] = [await coordinator(), await coordinator()];
      const locksA = coordinatedLocks(new FileLocks(dirs[0] as string), a);
      const locksB = coordinatedLocks(new FileLocks(dirs[1] as string), b);
      let finish!: () => void;
      let evicted: unknown;
      const started = new Promise<void>((ready) => {
        void locksA
          .tryRun(EVICTOR_LOCK, () => {
            ready();
            return new Promise<string>((r) => (finish = () => r('a')));
          })
          .then((v) => (evicted = v));
      });
      await started;
      expect(await locksB.tryRun(EVICTOR_LOCK, () => Promise.resolve('b'))).toEqual({ ran: false });
      finish();
      await expect.poll(() => evicted).toEqual({ ran: true, value: 'a' });
      await expect
        .poll(async () => locksB.tryRun(EVICTOR_LOCK, () => Promise.resolve('b')))
        .toEqual({ ran: true, value: 'b' });
    } finally {
      await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    }
  });
});
