import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { keelError, constant, retryBudget, VirtualClock } from 'keel';
import type { Queue } from '@keel/queue';
import type { QueueRow } from '@keel/store';
import {
  PG_URL,
  postgresAvailable,
  postgresQueueFixture,
  sqliteQueueFixture,
  until,
  type QueueFixture,
} from './queue-support.js';

const withPg = await postgresAvailable();
const stores: [string, () => Promise<QueueFixture>][] = [['sqlite', sqliteQueueFixture]];
if (withPg) stores.push(['postgres', postgresQueueFixture]);

const T0 = 1_700_000_000_000;
const KEY = Buffer.alloc(32, 7);

describe.each(stores)('queue on %s', (_name, makeFixture) => {
  let fx: QueueFixture;
  let clock: VirtualClock;

  beforeEach(async () => {
    fx = await makeFixture();
    clock = new VirtualClock(T0);
  });
  afterEach(async () => {
    await fx.dispose();
  });

  const open = <T>(options: Parameters<QueueFixture['open']>[0] = {}): Promise<Queue<T>> =>
    fx.open<T>({ clock, retention: false, ...options });

  const ref = (row: { id: number; token: string | null } | undefined) => ({
    id: row?.id ?? -1,
    token: row?.token ?? '',
  });

  it('keeps every acknowledged enqueue, committed together, across a reopen', async () => {
    const q = await open<number>();
    const res = await Promise.all(Array.from({ length: 100 }, (_, i) => q.enqueue(i)));
    expect(new Set(res.map((r) => r.id)).size).toBe(100);
    expect(res.every((r) => !r.duplicate)).toBe(true);
    await q.close();
    const again = await open<number>();
    expect((await again.stats()).pending).toBe(100);
    expect((await again.list('pending', 1000)).map((i) => i.payload)).toEqual(
      Array.from({ length: 100 }, (_, i) => i),
    );
  });

  it('returns the first item for a repeated idempotency key, in one batch or later', async () => {
    const q = await open<string>();
    const [a, b] = await Promise.all([
      q.enqueue('a', { idempotencyKey: 'k' }),
      q.enqueue('b', { idempotencyKey: 'k' }),
    ]);
    expect(a?.duplicate).toBe(false);
    expect(b).toEqual({ id: a?.id, duplicate: true });
    const c = await q.enqueue('c', { idempotencyKey: 'k' });
    expect(c).toEqual({ id: a?.id, duplicate: true });
    const other = await open<string>();
    expect(await other.enqueue('d', { idempotencyKey: 'k' })).toEqual({ id: a?.id, duplicate: true });
    expect((await q.list('pending')).map((i) => i.payload)).toEqual(['a']);
  });

  it('claims higher priority first and holds delayed items until they are due', async () => {
    const q = await open<string>();
    await q.enqueue('low');
    await q.enqueue('later', { delayMs: 1000, priority: 100 });
    await q.enqueue('high', { priority: 5 });
    const store = q.rawStore;
    const first = await store.claim('q', 10, 60_000, clock.now());
    expect(first.map((r) => JSON.parse(r.payload) as string)).toEqual(['high', 'low']);
    await clock.advance(999);
    expect(await store.claim('q', 10, 60_000, clock.now())).toEqual([]);
    await clock.advance(1);
    expect(
      (await store.claim('q', 10, 60_000, clock.now())).map((r) => JSON.parse(r.payload) as string),
    ).toEqual(['later']);
  });

  it('rejects bad enqueue options with a message naming the option', async () => {
    const q = await open<string>();
    await expect(q.enqueue('x', { maxAttempts: 0 })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: /maxAttempts/,
    });
    await expect(q.enqueue('x', { delayMs: -1 })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: /delayMs/,
    });
  });

  it('reclaims an expired lease in another instance and refuses the stale token', async () => {
    const a = await open<string>();
    const b = await open<string>();
    await a.enqueue('x');
    const [first] = await a.rawStore.claim('q', 1, 1000, clock.now());
    expect(first?.attempts).toBe(1);
    await clock.advance(500);
    expect(await b.rawStore.claim('q', 1, 1000, clock.now())).toEqual([]);
    await clock.advance(2000);
    const [second] = await b.rawStore.claim('q', 1, 1000, clock.now());
    expect(second?.id).toBe(first?.id);
    expect(second?.attempts).toBe(2);
    expect(second?.token).not.toBe(first?.token);
    const stale = ref(first);
    expect((await a.rawStore.heartbeat([stale], clock.now() + 1000)).size).toBe(0);
    expect((await a.rawStore.complete([stale], clock.now())).size).toBe(0);
    expect(await a.rawStore.fail(stale, { message: 'late' }, null, clock.now())).toBe(false);
    expect(await a.rawStore.release(stale)).toBe(false);
    expect([...(await b.rawStore.heartbeat([ref(second)], clock.now() + 1000))]).toEqual([second?.id]);
    expect([...(await b.rawStore.complete([ref(second)], clock.now()))]).toEqual([second?.id]);
    expect((await a.stats()).completed).toBe(1);
  });

  it('renews the lease by heartbeats while a handler runs, and aborts it with STALE_TOKEN once the lease is lost', async () => {
    const a = await open<string>();
    const b = await open<string>();
    await a.enqueue('long');
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let lost: unknown;
    a.process(
      async ({ signal }) => {
        signal.addEventListener('abort', () => {
          lost = signal.reason;
        });
        await gate;
      },
      { leaseMs: 900, pollMs: 2 },
    );
    await until(async () => (await a.stats()).active === 1, 'the item to be claimed');
    // Ten lease lengths pass; every 300 ms a heartbeat renews the lease.
    for (let i = 0; i < 30; i++) {
      await clock.advance(300);
      await until(
        async () => ((await a.rawStore.list('q', 'active', 1))[0]?.leaseUntil ?? 0) > clock.now(),
        'the renewal',
      ).catch(async (err: unknown) => {
        // Say what the store holds, so a failure here can be understood from the log alone.
        const rows = (await a.rawStore.list('q', 'active', 5)).map((r) => [r.id, r.attempts, r.leaseUntil]);
        throw new Error(
          `${String(err)} at step ${i}, clock ${clock.now()}; active [id, attempts, leaseUntil]: ${JSON.stringify(rows)}`,
        );
      });
    }
    expect(await b.rawStore.claim('q', 1, 900, clock.now())).toEqual([]);
    // Another worker whose clock runs far ahead takes the item over: the first one's lease is lost.
    // (The first worker stops claiming, so it cannot win the reclaimed item back first.)
    a.pause();
    // A claim of the first worker still under way may hold the row, and claims skip locked rows:
    // the takeover tries until the row is free.
    let taken: QueueRow | undefined;
    await until(async () => {
      [taken] = await b.rawStore.claim('q', 1, 60_000, clock.now() + 10_000);
      return taken !== undefined;
    }, 'the takeover');
    expect(taken?.attempts).toBe(2);
    await clock.advance(300);
    await until(() => lost !== undefined, 'the handler to be told');
    expect(lost).toMatchObject({ code: 'STALE_TOKEN' });
    release();
    await until(async () => (await a.stats()).staleTotal === 1, 'the refused completion');
    expect((await a.stats()).completed).toBe(0);
    expect([...(await b.rawStore.complete([ref(taken)], clock.now()))]).toEqual([taken?.id]);
  });

  it('retries with the backoff, then dead-letters with the error history, and redrives', async () => {
    const q = await open<string>();
    await q.enqueue('x', { maxAttempts: 3 });
    let calls = 0;
    let fail = true;
    q.process(
      () => {
        calls++;
        return fail
          ? Promise.reject(keelError('SERVICE_UNAVAILABLE', `down ${String(calls)}`))
          : Promise.resolve();
      },
      { pollMs: 2, backoff: constant(0) },
    );
    await until(async () => (await q.stats()).dead === 1, 'a dead letter');
    expect(calls).toBe(3);
    const [dead] = await q.deadLetters();
    expect(dead?.attempts).toBe(3);
    expect(dead?.errors.map((e) => (e as { message: string; code: string }).message)).toEqual([
      'down 1',
      'down 2',
      'down 3',
    ]);
    expect((dead?.errors[0] as { code: string }).code).toBe('SERVICE_UNAVAILABLE');
    expect((await q.stats()).deadLetteredTotal).toBe(1);
    fail = false;
    expect(await q.redrive()).toBe(1);
    await until(async () => (await q.stats()).completed === 1, 'the redriven item to complete');
    expect((await q.stats()).dead).toBe(0);
  });

  it('reschedules a failed item after the backoff delay, and after maxDelayMs when the retry budget is spent', async () => {
    const q = await open<string>();
    await q.enqueue('a');
    await q.enqueue('b');
    const budget = retryBudget({ maxTokens: 5, retryCost: 5, ratio: 0, minPerSecond: 0, clock });
    const failed: string[] = [];
    q.process(
      ({ payload }) => {
        failed.push(payload);
        return Promise.reject(keelError('SERVICE_UNAVAILABLE', 'down'));
      },
      { pollMs: 2, backoff: constant(7_000), budget, maxDelayMs: 90_000 },
    );
    await until(() => failed.length === 2, 'two failures');
    await until(async () => (await q.list('pending')).length === 2, 'both back to pending');
    const pending = await q.list('pending');
    // The first failure spends the budget's only retry (backoff delay); the second finds it spent.
    expect(pending.map((i) => i.runAt - T0).sort((x, y) => x - y)).toEqual([7_000, 90_000]);
  });

  it('dead-letters a non-retryable error at once', async () => {
    const q = await open<string>();
    await q.enqueue('x', { maxAttempts: 5 });
    q.process(() => Promise.reject(keelError('INVALID_INPUT', 'bad')), { pollMs: 2 });
    await until(async () => (await q.stats()).dead === 1, 'a dead letter');
    const [dead] = await q.deadLetters();
    expect(dead?.attempts).toBe(1);
    expect(dead?.errors).toHaveLength(1);
  });

  it('redrives only the dead letters asked for', async () => {
    const q = await open<string>();
    const a = await q.enqueue('a', { maxAttempts: 1 });
    await q.enqueue('b', { maxAttempts: 1 });
    for (const row of await q.rawStore.claim('q', 2, 1000, clock.now()))
      await q.rawStore.fail(ref(row), { m: 'x' }, null, clock.now());
    expect((await q.stats()).dead).toBe(2);
    expect(await q.redrive([a.id])).toBe(1);
    expect((await q.list('pending')).map((i) => i.payload)).toEqual(['a']);
    expect((await q.list('pending'))[0]?.attempts).toBe(0);
  });

  it('processes items of one partition in order, one at a time, across two instances', async () => {
    const a = await open<{ p: string; n: number }>();
    const b = await open<{ p: string; n: number }>();
    for (let n = 0; n < 30; n++)
      await a.enqueue({ p: n % 3 ? 'x' : 'y', n }, { partitionKey: n % 3 ? 'x' : 'y' });
    const seen: Record<string, number[]> = { x: [], y: [] };
    const running = new Set<string>();
    let overlap = false;
    const handler = async ({ payload }: { payload: { p: string; n: number } }): Promise<void> => {
      if (running.has(payload.p)) overlap = true;
      running.add(payload.p);
      await new Promise((r) => setImmediate(r));
      seen[payload.p]?.push(payload.n);
      running.delete(payload.p);
    };
    a.process(handler, { concurrency: 4, pollMs: 2 });
    b.process(handler, { concurrency: 4, pollMs: 2 });
    await until(async () => (await a.stats()).completed === 30, 'all 30 completed');
    expect(overlap).toBe(false);
    expect(seen.x).toEqual(Array.from({ length: 30 }, (_, n) => n).filter((n) => n % 3 !== 0));
    expect(seen.y).toEqual(Array.from({ length: 30 }, (_, n) => n).filter((n) => n % 3 === 0));
  });

  it('hands each item to exactly one of several live workers', async () => {
    const producer = await open<number>();
    await Promise.all(Array.from({ length: 200 }, (_, i) => producer.enqueue(i)));
    const handled: number[] = [];
    const workers = await Promise.all([open<number>(), open<number>(), open<number>()]);
    for (const w of workers)
      w.process(
        async ({ payload }) => {
          handled.push(payload);
          await new Promise((r) => setImmediate(r));
        },
        { concurrency: 8, pollMs: 2 },
      );
    await until(async () => (await producer.stats()).completed === 200, 'all 200 completed');
    expect(handled).toHaveLength(200);
    expect(new Set(handled).size).toBe(200);
  });

  it('pauses and resumes claiming for every instance', async () => {
    const a = await open<string>();
    const b = await open<string>();
    await a.enqueue('x');
    await a.pauseAll();
    expect((await b.stats()).paused).toBe(true);
    expect(await b.rawStore.claim('q', 1, 1000, clock.now())).toEqual([]);
    await b.resumeAll();
    expect((await a.stats()).paused).toBe(false);
    expect(await a.rawStore.claim('q', 1, 1000, clock.now())).toHaveLength(1);
  });

  it('pauses and resumes this instance', async () => {
    const q = await open<string>();
    await q.enqueue('x');
    q.pause();
    const handled: string[] = [];
    q.process(
      ({ payload }) => {
        handled.push(payload);
        return Promise.resolve();
      },
      { pollMs: 2 },
    );
    // Several poll rounds pass while paused: nothing is claimed.
    const other = await open<string>();
    for (let i = 0; i < 5; i++) await other.stats();
    expect((await q.stats()).active).toBe(0);
    expect(handled).toEqual([]);
    q.resume();
    await until(() => handled.length === 1, 'the item after resume');
  });

  it('releases claimed items on a graceful close, without counting the attempt', async () => {
    const q = await open<string>();
    await q.enqueue('slow');
    let aborted: unknown;
    q.process(
      ({ signal }) =>
        new Promise<void>((_, reject) => {
          signal.addEventListener('abort', () => {
            aborted = signal.reason;
            reject(signal.reason as Error);
          });
        }),
      { pollMs: 2 },
    );
    await until(async () => (await q.stats()).active === 1, 'the item to be claimed');
    await q.close(20);
    expect(aborted).toMatchObject({ code: 'ABORTED' });
    const again = await open<string>();
    const [item] = await again.list('pending');
    expect(item).toMatchObject({ payload: 'slow', attempts: 0 });
    expect((await again.stats()).active).toBe(0);
  });

  it('claims ahead up to prefetch, and gives back what did not start on close', async () => {
    const q = await open<number>();
    await Promise.all([1, 2, 3, 4, 5, 6].map((n) => q.enqueue(n)));
    const started: number[] = [];
    q.process(
      ({ payload, signal }) => {
        started.push(payload);
        return new Promise<void>((_, reject) => {
          signal.addEventListener('abort', () => {
            reject(signal.reason as Error);
          });
        });
      },
      { concurrency: 1, prefetch: 3, pollMs: 2 },
    );
    await until(async () => (await q.stats()).active === 4, 'one running and three prefetched');
    expect(started).toEqual([1]);
    expect((await q.stats()).pending).toBe(2);
    await q.close(20);
    const again = await open<number>();
    const pending = await again.list('pending');
    expect(pending.map((i) => [i.payload, i.attempts])).toEqual([1, 2, 3, 4, 5, 6].map((n) => [n, 0]));
  });

  it('finishes handlers in flight on close and commits pending enqueues', async () => {
    const q = await open<string>();
    await q.enqueue('a');
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    q.process(() => gate, { pollMs: 2 });
    await until(async () => (await q.stats()).active === 1, 'the item to be claimed');
    const late = q.enqueue('b');
    const closing = q.close(10_000);
    release();
    await closing;
    await late;
    await expect(q.enqueue('c')).rejects.toMatchObject({ code: 'QUEUE_CLOSED' });
    const again = await open<string>();
    expect(await again.stats()).toMatchObject({ completed: 1, pending: 1, active: 0 });
  });

  it('sweeps completed items after retention.completedMs and dead letters after retention.deadMs', async () => {
    const q = await open<string>({ retention: { completedMs: 1000, deadMs: 5000, intervalMs: 500 } });
    await q.enqueue('done');
    await q.enqueue('dead', { maxAttempts: 1 });
    const rows = await q.rawStore.claim('q', 2, 60_000, clock.now());
    const done = rows.find((r) => r.payload === '"done"');
    const dead = rows.find((r) => r.payload === '"dead"');
    await q.rawStore.complete([ref(done)], clock.now());
    await q.rawStore.fail(ref(dead), { m: 'x' }, null, clock.now());
    await clock.advance(999);
    expect(await q.stats()).toMatchObject({ completed: 1, dead: 1 });
    await clock.advance(600);
    await until(async () => (await q.stats()).completed === 0, 'the completed item to be swept');
    expect((await q.stats()).dead).toBe(1);
    await clock.advance(5000);
    await until(async () => (await q.stats()).dead === 0, 'the dead letter to be swept');
    expect((await q.stats()).sweptTotal).toBe(2);
  });

  it('reports depth, age of the oldest pending item and throughput', async () => {
    const q = await open<number>();
    expect(await q.stats()).toMatchObject({ pending: 0, oldestPendingAgeMs: null });
    await q.enqueue(1);
    await clock.advance(1500);
    await q.enqueue(2);
    expect(await q.stats()).toMatchObject({ pending: 2, oldestPendingAgeMs: 1500 });
    q.process(() => Promise.resolve(), { pollMs: 2 });
    await until(async () => (await q.stats()).completed === 2, 'both completed');
    expect(await q.stats()).toMatchObject({
      pending: 0,
      active: 0,
      completedTotal: 2,
      failedTotal: 0,
      oldestPendingAgeMs: null,
    });
  });

  it('stores encrypted payloads without their plaintext and refuses a wrong key clearly', async () => {
    const q = await open<{ card: string }>({ encryption: { key: KEY } });
    await q.enqueue({ card: 'secret-plaintext-4111' });
    const [raw] = await q.rawStore.list('q', 'pending', 1);
    expect(raw?.payload).not.toContain('secret-plaintext');
    expect(raw?.payload.startsWith('~k')).toBe(true);
    expect((await q.list('pending'))[0]?.payload).toEqual({ card: 'secret-plaintext-4111' });
    const wrong = await open<{ card: string }>({ encryption: { key: Buffer.alloc(32, 8) } });
    await expect(wrong.list('pending')).rejects.toMatchObject({
      code: 'QUEUE_DECRYPT_FAILED',
      message: /wrong encryption.key/,
    });
    const keyless = await open<{ card: string }>();
    expect((await keyless.list('pending'))[0]).toMatchObject({ encrypted: true, payload: undefined });
    const handled: string[] = [];
    q.process(
      ({ payload }) => {
        handled.push(payload.card);
        return Promise.resolve();
      },
      { pollMs: 2 },
    );
    await until(() => handled.length === 1, 'the encrypted item to be handled');
    expect(handled).toEqual(['secret-plaintext-4111']);
  });
  it('dead-letters an item its worker cannot decrypt, and handles it after a redrive with the right key', async () => {
    const writer = await open<string>({ encryption: { key: KEY } });
    await writer.enqueue('for the right key only');
    const wrong = await open<string>({ encryption: { key: Buffer.alloc(32, 9) } });
    let called = false;
    wrong.process(
      () => {
        called = true;
        return Promise.resolve();
      },
      { pollMs: 2 },
    );
    await until(async () => (await writer.stats()).dead === 1, 'the undecryptable item to be dead-lettered');
    expect(called).toBe(false);
    const [dead] = await writer.deadLetters();
    expect(dead?.payload).toBe('for the right key only');
    expect(dead?.errors[0]).toMatchObject({ code: 'QUEUE_DECRYPT_FAILED' });
    await wrong.close();
    const handled: string[] = [];
    writer.process(
      ({ payload }) => {
        handled.push(payload);
        return Promise.resolve();
      },
      { pollMs: 2 },
    );
    expect(await writer.redrive()).toBe(1);
    await until(() => handled.length === 1, 'the redriven item');
    expect(handled).toEqual(['for the right key only']);
  });
});

describe.skipIf(!withPg)('queue maintenance on PostgreSQL', () => {
  it('sweeps in one instance at a time: a sweep finding the advisory lock taken does nothing', async () => {
    const fx = await postgresQueueFixture();
    try {
      const clock = new VirtualClock(T0);
      const q = await fx.open<string>({ clock, retention: false });
      await q.enqueue('x');
      const [row] = await q.rawStore.claim('q', 1, 1000, clock.now());
      await q.rawStore.complete([{ id: row?.id ?? -1, token: row?.token ?? '' }], clock.now());
      await clock.advance(10_000);
      const holder = new pg.Client({ connectionString: PG_URL });
      await holder.connect();
      try {
        await holder.query('SELECT pg_advisory_lock(hashtext($1))', [
          `keel_queue:${fx.isolation.schema ?? ''}:sweep:q`,
        ]);
        expect(await q.rawStore.sweep('q', clock.now(), clock.now())).toBeNull();
        expect(await q.purge(0, 0)).toBe(0);
        expect((await q.stats()).completed).toBe(1);
        await holder.query('SELECT pg_advisory_unlock_all()');
        expect(await q.rawStore.sweep('q', clock.now(), clock.now())).toBe(1);
      } finally {
        await holder.end();
      }
    } finally {
      await fx.dispose();
    }
  });
});
