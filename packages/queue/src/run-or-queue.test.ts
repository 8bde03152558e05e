import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { keelError, circuitBreaker, consecutive, constant, pipeline, retry, VirtualClock } from 'keel';
import { createOutageQueue, isUnavailable, type OutageQueue, type RunOutcome } from './run-or-queue.js';
import { openQueue, type Queue } from './index.js';

interface Write {
  p: string;
  n: number;
}

/** The dependency: a table that refuses connections while `up` is false. */
class FakeDb {
  up = true;
  calls = 0;
  rows: Write[] = [];
  /** Payloads answered with a permanent error. */
  reject = new Set<number>();
  write(w: Write): Promise<number> {
    this.calls++;
    if (!this.up)
      return Promise.reject(
        Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
      );
    if (this.reject.has(w.n))
      return Promise.reject(
        keelError(
          'CONFLICT',
          `row ${String(w.n)} violates a check`,
          {},
          { kind: 'client', retryable: false },
        ),
      );
    this.rows.push(w);
    return Promise.resolve(this.rows.length);
  }
  order(p: string): number[] {
    return this.rows.filter((r) => r.p === p).map((r) => r.n);
  }
}

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function setup(opts: { queueFile?: string; maxAttempts?: number; start?: boolean } = {}): Promise<{
  clock: VirtualClock;
  db: FakeDb;
  queue: Queue<Write>;
  outage: OutageQueue<Write, number>;
  file: string;
}> {
  const clock = new VirtualClock(1_000_000);
  const db = new FakeDb();
  let file = opts.queueFile;
  if (!file) {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-outage-'));
    cleanup.push(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    file = path.join(dir, 'q.db');
  }
  const queue = await openQueue<Write>(file, { clock });
  const policy = pipeline(
    retry({ clock, maxAttempts: 2, backoff: constant(100) }),
    circuitBreaker({ clock, window: consecutive(2), halfOpenAfterMs: 5_000 }),
  );
  const outage = createOutageQueue({
    queue,
    policy,
    clock,
    operation: (w: Write) => db.write(w),
    leaseMs: 3_600_000,
    retryEveryMs: 1_000,
    ...(opts.maxAttempts === undefined ? {} : { maxAttempts: opts.maxAttempts }),
  });
  if (opts.start !== false) await outage.start();
  cleanup.push(async () => {
    outage.close();
    await queue.close(100);
  });
  return { clock, db, queue, outage, file };
}

/** Runs a call while virtual time moves on, so retry backoffs elapse. */
async function call(
  clock: VirtualClock,
  outage: OutageQueue<Write, number>,
  w: Write,
  extra: { idempotencyKey?: string } = {},
): Promise<RunOutcome<number>> {
  const p = outage.runOrQueue(w, { partitionKey: w.p, ...extra });
  for (let i = 0; i < 5; i++) await clock.advance(100);
  return p;
}

const stats = (q: Queue<Write>) => q.stats();
const dead = (q: Queue<Write>) => q.deadLetters();

/** Waits (real time) for the queue's worker loop, which polls on real timers. */
async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('runOrQueue', () => {
  it('returns the value when the dependency answers, and queues nothing', async () => {
    const { clock, db, queue, outage } = await setup();
    expect(await call(clock, outage, { p: 'a', n: 1 })).toEqual({ status: 'done', value: 1 });
    expect(db.rows).toEqual([{ p: 'a', n: 1 }]);
    expect((await stats(queue)).pending).toBe(0);
  });

  it('throws an answer that is not an outage instead of queuing it', async () => {
    const { clock, db, queue, outage } = await setup();
    db.reject.add(7);
    await expect(call(clock, outage, { p: 'a', n: 7 })).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(db.calls).toBe(1);
    expect((await stats(queue)).pending).toBe(0);
  });

  it('queues after retries are exhausted on a transient error and says why', async () => {
    const { clock, db, queue, outage } = await setup();
    db.up = false;
    const out = await call(clock, outage, { p: 'a', n: 1 });
    expect(out).toMatchObject({ status: 'queued', reason: 'unavailable', duplicate: false });
    expect(out.status === 'queued' && out.error?.code).toBe('RETRIES_EXHAUSTED');
    expect(db.calls).toBe(2);
    const s = await stats(queue);
    expect(s.pending + s.active).toBe(1);
  });

  it('queues without calling the dependency while the breaker is open, and replays nothing until it half-opens', async () => {
    const { clock, db, outage } = await setup();
    db.up = false;
    await call(clock, outage, { p: 'a', n: 1 }); // 2 failures: the breaker opens
    const callsWhenOpened = db.calls;
    for (let n = 2; n <= 5; n++)
      expect(await call(clock, outage, { p: 'a', n })).toMatchObject({ status: 'queued', reason: 'backlog' });
    expect(await call(clock, outage, { p: 'b', n: 1 })).toMatchObject({
      status: 'queued',
      reason: 'unavailable',
      error: { code: 'CIRCUIT_OPEN' },
    });
    db.up = true;
    // Open for 5 s from the trip; 2.5 s have passed. Give the worker loop a few real polls.
    await new Promise((r) => setTimeout(r, 200));
    expect(db.calls).toBe(callsWhenOpened);
    expect(db.rows).toEqual([]);
    await clock.advance(3_000); // past halfOpenAfterMs: a replay is the probe, then the rest drain
    await until(() => db.rows.length === 6);
    expect(db.order('a')).toEqual([1, 2, 3, 4, 5]);
    expect(db.order('b')).toEqual([1]);
    await until(() => outage.stats().partitionsWithBacklog === 0);
    expect(outage.stats()).toMatchObject({ replayed: 6, queuedUnavailable: 2, queuedBacklog: 4 });
  });

  it('queues calls of a partition behind its queued items even when the dependency is back', async () => {
    const { clock, db, outage } = await setup();
    db.up = false;
    await call(clock, outage, { p: 'a', n: 1 });
    db.up = true;
    expect(await call(clock, outage, { p: 'a', n: 2 })).toMatchObject({
      status: 'queued',
      reason: 'backlog',
    });
    // Another partition is not held back by a's backlog once the breaker lets calls through.
    await clock.advance(5_000);
    await until(() => db.rows.length === 2);
    expect(await call(clock, outage, { p: 'c', n: 1 })).toEqual({ status: 'done', value: 3 });
    expect(db.order('a')).toEqual([1, 2]);
    await until(() => outage.stats().partitionsWithBacklog === 0);
    expect(await call(clock, outage, { p: 'a', n: 3 })).toMatchObject({ status: 'done' });
    expect(db.order('a')).toEqual([1, 2, 3]);
  });

  it('keeps calls of one partition in call order when they overlap', async () => {
    const { clock, db, outage } = await setup();
    db.up = false;
    const calls = [1, 2, 3, 4].map((n) => outage.runOrQueue({ p: 'a', n }, { partitionKey: 'a' }));
    for (let i = 0; i < 10; i++) await clock.advance(100);
    const outs = await Promise.all(calls);
    expect(outs.map((o) => o.status)).toEqual(['queued', 'queued', 'queued', 'queued']);
    db.up = true;
    await clock.advance(5_000);
    await until(() => db.rows.length === 4);
    expect(db.order('a')).toEqual([1, 2, 3, 4]);
  });

  it('holds a replay while the dependency stays down, spending no attempts, then delivers it once', async () => {
    const { clock, db, queue, outage } = await setup({ maxAttempts: 2 });
    db.up = false;
    await call(clock, outage, { p: 'a', n: 1 });
    await call(clock, outage, { p: 'a', n: 2 });
    // Five open periods with failed probes: far more than maxAttempts tries of the item.
    for (let i = 0; i < 5; i++) {
      const before = db.calls;
      await clock.advance(5_000);
      await until(() => db.calls > before);
      await clock.advance(500);
    }
    expect(outage.stats().replayWaits).toBeGreaterThanOrEqual(5);
    expect(await dead(queue)).toEqual([]);
    db.up = true;
    await clock.advance(5_000);
    await until(() => db.rows.length === 2);
    expect(db.order('a')).toEqual([1, 2]);
    expect(await dead(queue)).toEqual([]);
  });

  it('gives a held replay back, its attempt not counted, when the queue closes during an outage', async () => {
    const { clock, db, queue, outage, file } = await setup();
    db.up = false;
    await call(clock, outage, { p: 'a', n: 1 });
    const before = db.calls;
    await clock.advance(5_000); // half-open: the replay is the probe and fails
    await until(() => db.calls > before);
    await clock.advance(200); // the retry's backoff; then CIRCUIT_OPEN: the replay holds its item
    await until(() => outage.stats().replayWaits > 0);
    outage.close();
    await queue.close(50);
    const again = await openQueue<Write>(file, { clock });
    cleanup.push(() => again.close(100));
    const [item, ...rest] = await again.list('pending');
    expect(rest).toEqual([]);
    expect(item).toMatchObject({ payload: { p: 'a', n: 1 }, attempts: 0, errors: [] });
  });

  it('starts the replayer on the first call when start() was not called', async () => {
    const { clock, db, outage } = await setup({ start: false });
    db.up = false;
    expect(await call(clock, outage, { p: 'a', n: 1 })).toMatchObject({ status: 'queued' });
    db.up = true;
    await clock.advance(5_000);
    await until(() => db.rows.length === 1);
    expect(outage.stats().replayed).toBe(1);
  });

  it('dead-letters a replay that gets a permanent answer and lets its partition move on', async () => {
    const { clock, db, queue, outage } = await setup({ maxAttempts: 1 });
    db.up = false;
    await call(clock, outage, { p: 'a', n: 1 });
    await call(clock, outage, { p: 'a', n: 2 });
    db.up = true;
    db.reject.add(1);
    await clock.advance(5_000);
    await until(() => db.rows.length === 1);
    expect(db.order('a')).toEqual([2]);
    expect((await dead(queue)).map((d) => d.payload)).toEqual([{ p: 'a', n: 1 }]);
    await until(() => outage.stats().partitionsWithBacklog === 0);
    expect(await call(clock, outage, { p: 'a', n: 3 })).toMatchObject({ status: 'done' });
  });

  it('stores a repeated idempotency key once and replays it once', async () => {
    const { clock, db, outage } = await setup();
    db.up = false;
    const first = await call(clock, outage, { p: 'a', n: 1 }, { idempotencyKey: 'w-1' });
    const again = await call(clock, outage, { p: 'a', n: 1 }, { idempotencyKey: 'w-1' });
    expect(again).toMatchObject({ status: 'queued', duplicate: true });
    expect(first.status === 'queued' && again.status === 'queued' && again.id === first.id).toBe(true);
    db.up = true;
    await clock.advance(5_000);
    await until(() => db.rows.length === 1);
    await until(() => outage.stats().partitionsWithBacklog === 0);
    expect(db.rows).toEqual([{ p: 'a', n: 1 }]);
  });

  it('after a restart, queues partitioned calls behind what the queue already held until it drained', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-outage-'));
    cleanup.push(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const file = path.join(dir, 'q.db');
    const held = await openQueue<Write>(file, { clock: new VirtualClock(1_000_000) });
    await held.enqueue({ p: 'a', n: 1 }, { partitionKey: 'a' });
    await held.close();
    const { clock, db, outage } = await setup({ queueFile: file });
    expect(outage.stats().startupBacklog).toBe(true);
    // The breaker is closed, so the held item replays at once; a new call meanwhile queues behind it.
    const out = await call(clock, outage, { p: 'a', n: 2 });
    expect(out.status === 'queued' ? out.reason : out.status).toBe('backlog');
    await until(() => db.rows.length === 2);
    expect(db.order('a')).toEqual([1, 2]);
    await clock.advance(1_000); // the periodic check sees the queue empty
    await until(() => !outage.stats().startupBacklog);
    expect(await call(clock, outage, { p: 'a', n: 3 })).toMatchObject({ status: 'done' });
  });
});

describe('createOutageQueue options', () => {
  it.each([
    ['retryEveryMs', { retryEveryMs: 0 }],
    ['concurrency', { concurrency: -1 }],
    ['checkEveryMs', { checkEveryMs: Number.NaN }],
  ])('refuses a bad %s, naming it', async (name, bad) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-outage-'));
    const queue = await openQueue<Write>(path.join(dir, 'q.db'));
    cleanup.push(async () => {
      await queue.close(100);
      rmSync(dir, { recursive: true, force: true });
    });
    expect(() =>
      createOutageQueue({ queue, policy: retry(), operation: () => Promise.resolve(1), ...bad }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG', message: expect.stringContaining(name) }));
  });
});

describe('isUnavailable', () => {
  const cases: [string, ReturnType<typeof keelError>, boolean][] = [
    ['an open breaker', keelError('CIRCUIT_OPEN', 'open', {}, { retryable: false }), true],
    ['a full bulkhead', keelError('BULKHEAD_FULL', 'full', {}, { retryable: false }), true],
    [
      'retries exhausted on a reset',
      keelError(
        'RETRIES_EXHAUSTED',
        'gave up',
        {},
        { retryable: false, cause: Object.assign(new Error('r'), { code: 'ECONNRESET' }) },
      ),
      true,
    ],
    [
      'retries exhausted on a 400',
      keelError(
        'RETRIES_EXHAUSTED',
        'gave up',
        {},
        { retryable: false, cause: keelError('BAD', 'bad', {}, { retryable: false }) },
      ),
      false,
    ],
    ['a timeout', keelError('TIMEOUT', 'slow', {}, { retryable: true }), true],
    ['a caller abort', keelError('ABORTED', 'aborted', {}, { retryable: false }), false],
    ['a not-found answer', keelError('NOT_FOUND', 'no row', {}, { retryable: false }), false],
  ];
  it.each(cases)('%s → %s', (_name, error, expected) => {
    expect(isUnavailable(error)).toBe(expected);
  });
});
