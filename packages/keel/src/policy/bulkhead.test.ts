import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../time/index.js';
import { bulkhead } from './bulkhead.js';

function gate() {
  const opens: (() => void)[] = [];
  const fn = () => new Promise<string>((resolve) => opens.push(() => resolve('done')));
  return { fn, opens };
}

describe('bulkhead', () => {
  it('runs at most maxConcurrent at once and rejects the rest with BULKHEAD_FULL', async () => {
    const b = bulkhead({ maxConcurrent: 2 });
    const g = gate();
    const p1 = b.execute(g.fn);
    const p2 = b.execute(g.fn);
    const rejected: string[] = [];
    b.on('rejected', (e) => rejected.push(e.reason));
    const err = await b.execute(g.fn).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BULKHEAD_FULL', details: { active: 2, queued: 0 } });
    expect((err as Error).message).toMatch(/is full/);
    expect(g.opens.length).toBe(2);
    expect(rejected).toEqual(['bulkheadFull']);
    g.opens.forEach((o) => o());
    await Promise.all([p1, p2]);
    expect(b.stats()).toMatchObject({ active: 0, successes: 2, rejections: 1, failures: 1 });
  });

  it('queues up to maxQueue calls and runs them in order as slots free', async () => {
    const b = bulkhead({ maxConcurrent: 1, maxQueue: 2 });
    const order: number[] = [];
    const g = gate();
    const first = b.execute(g.fn);
    const second = b.execute(async () => order.push(2));
    const third = b.execute(async () => order.push(3));
    expect(b.stats()).toMatchObject({ active: 1, queued: 2 });
    await expect(b.execute(g.fn)).rejects.toMatchObject({ code: 'BULKHEAD_FULL' });
    g.opens[0]!();
    await Promise.all([first, second, third]);
    expect(order).toEqual([2, 3]);
    expect(b.stats()).toMatchObject({ active: 0, queued: 0 });
  });

  it('frees the slot when the function fails', async () => {
    const b = bulkhead({ maxConcurrent: 1 });
    await expect(b.execute(() => Promise.reject(new Error('x')))).rejects.toThrow('x');
    await expect(b.execute(() => 'ok')).resolves.toBe('ok');
  });

  it('a queued call times out after queueTimeoutMs', async () => {
    const clock = new VirtualClock();
    const b = bulkhead({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 50, clock });
    const g = gate();
    const running = b.execute(g.fn);
    const waiting = b.execute(() => 'never').catch((e: unknown) => e);
    await clock.advance(50);
    expect(await waiting).toMatchObject({ code: 'BULKHEAD_FULL', details: { queueTimeoutMs: 50 } });
    expect(b.stats().queued).toBe(0);
    g.opens[0]!();
    await running;
  });

  it('a queued call leaves the queue when its caller aborts', async () => {
    const b = bulkhead({ maxConcurrent: 1, maxQueue: 1 });
    const g = gate();
    const running = b.execute(g.fn);
    const controller = new AbortController();
    let ran = false;
    const waiting = b
      .execute(
        () => {
          ran = true;
        },
        { signal: controller.signal },
      )
      .catch((e: unknown) => e);
    controller.abort();
    expect(await waiting).toMatchObject({ code: 'ABORTED' });
    g.opens[0]!();
    await running;
    expect(ran).toBe(false);
    expect(b.stats()).toMatchObject({ active: 0, queued: 0 });
  });

  it('rejects invalid limits', () => {
    expect(() => bulkhead({ maxConcurrent: 0 })).toThrow(/maxConcurrent/);
    expect(() => bulkhead({ maxQueue: -1 })).toThrow(/maxQueue/);
  });
});

describe('bulkhead properties', () => {
  it('never runs more than maxConcurrent calls and serves the queue in order', async () => {
    const fc = (await import('fast-check')).default;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 4 }),
        fc.array(fc.oneof(fc.constant('start' as const), fc.nat({ max: 20 })), {
          minLength: 5,
          maxLength: 60,
        }),
        async (maxConcurrent, maxQueue, cmds) => {
          const b = bulkhead({ maxConcurrent, maxQueue });
          let running = 0;
          let peak = 0;
          const startedOrder: number[] = [];
          const finishers: (() => void)[] = [];
          const done: Promise<unknown>[] = [];
          let id = 0;
          for (const c of cmds) {
            if (c === 'start') {
              const mine = id++;
              done.push(
                b
                  .execute(
                    () =>
                      new Promise<void>((resolve) => {
                        running++;
                        peak = Math.max(peak, running);
                        startedOrder.push(mine);
                        finishers.push(() => {
                          running--;
                          resolve();
                        });
                      }),
                  )
                  .catch(() => undefined),
              );
            } else if (finishers.length > 0) {
              finishers.splice(c % finishers.length, 1)[0]!();
              await new Promise((r) => setImmediate(r));
            }
          }
          while (finishers.length > 0) {
            finishers.shift()!();
            await new Promise((r) => setImmediate(r));
          }
          await Promise.all(done);
          expect(peak).toBeLessThanOrEqual(maxConcurrent);
          expect(startedOrder).toEqual([...startedOrder].sort((x, y) => x - y));
          expect(b.stats()).toMatchObject({ active: 0, queued: 0 });
        },
      ),
      { numRuns: 100 },
    );
  });
});
