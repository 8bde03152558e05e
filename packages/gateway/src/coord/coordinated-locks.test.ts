import { EventEmitter } from 'node:events';
import type { Worker } from 'node:cluster';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EVICTOR_LOCK, FileLocks } from 'keel/cache';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ClusterCoordination } from './cluster-coordination.js';
import { ClusterCoordinator } from './cluster-coordinator.js';
import { coordinatedLocks } from './coordinated-locks.js';

/** A worker's coordinator joined to `primary` by an in-memory channel (ordered, copied, async). */
function worker(primary: ClusterCoordination, id: number): { coord: ClusterCoordinator; kill(): void } {
  const toWorker = new Set<(m: unknown) => void>();
  let connected = true;
  const fake = Object.assign(new EventEmitter(), {
    id,
    isConnected: () => connected,
    send(m: unknown): boolean {
      setImmediate(() => {
        for (const l of toWorker) l(structuredClone(m));
      });
      return true;
    },
  });
  primary.add(fake as unknown as Worker);
  const coord = new ClusterCoordinator(
    (m) => {
      if (connected) setImmediate(() => fake.emit('message', structuredClone(m)));
    },
    (l) => {
      toWorker.add(l);
      return () => toWorker.delete(l);
    },
  );
  return {
    coord,
    kill: () => {
      connected = false;
      primary.remove(fake as unknown as Worker);
    },
  };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-coord-locks-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('coordinatedLocks', () => {
  it('elects one evictor across workers through the coordinator, even when their lock files are not shared', async () => {
    const primary = new ClusterCoordination();
    const a = worker(primary, 1);
    const b = worker(primary, 2);
    // Two directories: only the lease keeps the two from evicting at once.
    const locksA = coordinatedLocks(new FileLocks(path.join(root, 'a')), a.coord);
    const locksB = coordinatedLocks(new FileLocks(path.join(root, 'b')), b.coord);
    const evicting = deferred();
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const first = locksA.tryRun(EVICTOR_LOCK, async () => {
      started();
      await evicting.promise;
      return 'a evicted';
    });
    await running;
    expect(await locksB.tryRun(EVICTOR_LOCK, () => Promise.resolve('b evicted'))).toEqual({ ran: false });
    evicting.resolve();
    expect(await first).toEqual({ ran: true, value: 'a evicted' });
    expect(await locksB.tryRun(EVICTOR_LOCK, () => Promise.resolve('b evicted'))).toEqual({
      ran: true,
      value: 'b evicted',
    });
    await Promise.all([a.coord.close(), b.coord.close()]);
  });

  it('a worker that dies while evicting leaves the election to the next', async () => {
    const primary = new ClusterCoordination();
    const a = worker(primary, 1);
    const b = worker(primary, 2);
    const locksA = coordinatedLocks(new FileLocks(path.join(root, 'a')), a.coord);
    const locksB = coordinatedLocks(new FileLocks(path.join(root, 'b')), b.coord);
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    void locksA.tryRun(EVICTOR_LOCK, () => {
      started();
      return new Promise<never>(() => undefined); // never ends: its process is gone
    });
    await running;
    expect((await locksB.tryRun(EVICTOR_LOCK, () => Promise.resolve(1))).ran).toBe(false);
    a.kill();
    expect(await locksB.tryRun(EVICTOR_LOCK, () => Promise.resolve(1))).toEqual({ ran: true, value: 1 });
    await b.coord.close();
  });

  it('leaves every other lock to the lock files: an object lock waits for its holder', async () => {
    const primary = new ClusterCoordination();
    const a = worker(primary, 1);
    const b = worker(primary, 2);
    // One FileLocks behind both (two in one process would take each other's files for a past holder's).
    const files = new FileLocks(path.join(root, 'shared'));
    const locksA = coordinatedLocks(files, a.coord);
    const locksB = coordinatedLocks(files, b.coord);
    const order: string[] = [];
    const held = deferred();
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const first = locksA.run('object-1', async () => {
      started();
      await held.promise;
      order.push('a');
    });
    await running;
    const second = locksB.run('object-1', () => {
      order.push('b');
      return Promise.resolve();
    });
    held.resolve();
    await Promise.all([first, second]);
    expect(order).toEqual(['a', 'b']);
    await Promise.all([a.coord.close(), b.coord.close()]);
  });
});
