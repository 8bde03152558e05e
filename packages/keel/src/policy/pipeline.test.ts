import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../time/index.js';
import { constant } from './backoff.js';
import { consecutive } from './breaker/consecutive.js';
import { bulkhead } from './bulkhead.js';
import { circuitBreaker } from './circuit-breaker.js';
import { fallback } from './fallback.js';
import { hedge } from './hedge.js';
import { pipeline } from './pipeline.js';
import type { PolicyContext } from './policy.js';
import { retry } from './retry.js';
import { timeout } from './timeout.js';

const reset = (): Error => Object.assign(new Error('reset'), { code: 'ECONNRESET' });

describe('pipeline', () => {
  it('runs a function through every policy and returns its value', async () => {
    const clock = new VirtualClock();
    const p = pipeline(timeout(1000, { clock }), retry({ clock }), circuitBreaker({ clock }));
    await expect(p.execute(() => 'ok')).resolves.toBe('ok');
    expect(p.stats()).toMatchObject({ calls: 1, successes: 1, failures: 0 });
    expect(p.stats().policies.map((s) => s.successes)).toEqual([1, 1, 1]);
  });

  it('creates no AbortController unless the function reads ctx.signal', async () => {
    const clock = new VirtualClock();
    const p = pipeline(timeout(1000, { clock }), retry({ clock }), circuitBreaker({ clock }));
    let ctx: PolicyContext | undefined;
    await p.execute((c) => {
      ctx = c;
      return 1;
    });
    const internals = ctx as unknown as { controller: unknown; parent?: { controller: unknown } };
    expect(internals.controller).toBeUndefined();
    expect(internals.parent?.controller).toBeUndefined();
    const withSignal = await p.execute((c) => c.signal.aborted);
    expect(withSignal).toBe(false);
  });

  it('retries each attempt through the breaker (the first argument is outermost)', async () => {
    const clock = new VirtualClock();
    const breaker = circuitBreaker({ clock, window: consecutive(2) });
    const p = pipeline(retry({ clock, maxAttempts: 5, backoff: constant(0) }), breaker);
    let calls = 0;
    const err = await p
      .execute(() => {
        calls++;
        throw reset();
      })
      .catch((e: unknown) => e);
    // two failures open the breaker; the third attempt is rejected CIRCUIT_OPEN, which is not retried
    expect(calls).toBe(2);
    expect(err).toMatchObject({ code: 'CIRCUIT_OPEN' });
    expect(breaker.stats()).toMatchObject({ calls: 3, rejections: 1 });
  });

  it('passes the attempt number of the innermost retry to the function', async () => {
    const clock = new VirtualClock();
    const attempts: number[] = [];
    const p = pipeline(
      timeout(1000, { clock }),
      retry({ clock, backoff: constant(0) }),
      circuitBreaker({ clock }),
    );
    await p.execute(({ attempt }) => {
      attempts.push(attempt);
      if (attempt < 3) throw reset();
      return 'third time';
    });
    expect(attempts).toEqual([1, 2, 3]);
  });

  it('an outer timeout bounds all attempts and cancels a retry wait at once', async () => {
    const clock = new VirtualClock();
    const p = pipeline(
      timeout(500, { clock, resolutionMs: 10 }),
      retry({ clock, maxAttempts: 10, backoff: constant(200) }),
    );
    let calls = 0;
    const result = p
      .execute(() => {
        calls++;
        throw reset();
      })
      .catch((e: unknown) => ({ e, at: clock.now() }));
    await clock.advance(2000);
    const { e, at } = (await result) as { e: { code: string; message: string }; at: number };
    expect(e.code).toBe('TIMEOUT');
    expect(at).toBeGreaterThanOrEqual(500);
    expect(at).toBeLessThanOrEqual(510);
    expect(calls).toBe(3); // at 0, 200, 400; the wait to 600 was cut short
  });

  it('an inner timeout bounds each attempt and the retry gets a fresh signal for the next one', async () => {
    const clock = new VirtualClock();
    const p = pipeline(retry({ clock, backoff: constant(0) }), timeout(100, { clock, resolutionMs: 5 }));
    const result = p.execute(({ signal, attempt }) => {
      if (attempt === 2) return signal.aborted ? 'stale signal' : 'second attempt';
      return new Promise((_resolve, reject) =>
        signal.addEventListener('abort', () => reject(signal.reason as Error)),
      );
    });
    await clock.advance(200);
    await expect(result).resolves.toBe('second attempt');
  });

  it('an aggressive per-attempt timeout abandons a hung attempt and retries', async () => {
    const clock = new VirtualClock();
    const p = pipeline(
      retry({ clock, backoff: constant(0) }),
      timeout(100, { clock, strategy: 'aggressive' }),
    );
    const result = p.execute(({ attempt }) => (attempt === 1 ? new Promise(() => undefined) : 'recovered'));
    await clock.advance(200);
    await expect(result).resolves.toBe('recovered');
  });

  it('a fallback outermost turns any failure, rejections included, into its value', async () => {
    const clock = new VirtualClock();
    const breaker = circuitBreaker({ clock, window: consecutive(1) });
    const p = pipeline(fallback('cached copy'), retry({ clock, backoff: constant(0) }), breaker);
    await expect(p.execute(() => Promise.reject(reset()))).resolves.toBe('cached copy');
    expect(breaker.state).toBe('open');
    let called = false;
    await expect(
      p.execute(() => {
        called = true;
        return 'live';
      }),
    ).resolves.toBe('cached copy');
    expect(called).toBe(false);
    const typed = pipeline(fallback('cached copy'), retry({ clock }));
    const value: string = await typed.execute(() => 'live');
    expect(value).toBe('live');
  });

  it('a bulkhead queue inside a pipeline admits calls as slots free', async () => {
    const clock = new VirtualClock();
    const p = pipeline(timeout(1000, { clock }), bulkhead({ maxConcurrent: 1, maxQueue: 5 }));
    const order: number[] = [];
    const calls = [1, 2, 3].map((n) =>
      p.execute(async () => {
        await clock.sleep(10);
        order.push(n);
        return n;
      }),
    );
    await clock.advance(50);
    await expect(Promise.all(calls)).resolves.toEqual([1, 2, 3]);
    expect(order).toEqual([1, 2, 3]);
  });

  it('a rejection deep in a pipeline goes through the outer policies', async () => {
    const b = bulkhead({ maxConcurrent: 1 });
    const p = pipeline(fallback('shed'), b);
    let release: () => void = () => undefined;
    const first = p.execute(() => new Promise<string>((resolve) => (release = () => resolve('first'))));
    await expect(p.execute(() => 'second')).resolves.toBe('shed');
    release();
    await expect(first).resolves.toBe('first');
  });

  it('hedges inside a pipeline (wrapping layers use the general path)', async () => {
    const clock = new VirtualClock();
    const p = pipeline(timeout(1000, { clock }), hedge({ clock, delayMs: 50 }), circuitBreaker({ clock }));
    const result = p.execute(async ({ attempt }) => {
      await clock.sleep(attempt === 1 ? 500 : 10);
      return attempt;
    });
    await clock.advance(100);
    await expect(result).resolves.toBe(2);
  });

  it('nests pipelines by flattening them', async () => {
    const clock = new VirtualClock();
    const inner = pipeline(retry({ clock, backoff: constant(0) }), circuitBreaker({ clock }));
    const outer = pipeline(timeout(1000, { clock }), inner);
    let n = 0;
    await expect(outer.execute(() => (++n < 2 ? Promise.reject(reset()) : 'ok'))).resolves.toBe('ok');
    expect(inner.stats().policies[0]).toMatchObject({ retries: 1 });
  });

  it('emits its own success and failure events with durations once someone listens', async () => {
    const p = pipeline(retry({ maxAttempts: 1 }), circuitBreaker());
    await p.execute(() => 1);
    const events: string[] = [];
    p.on('success', (e) => events.push(`success ${typeof e.durationMs}`));
    p.on('failure', (e) => events.push(`failure ${(e.error as Error).message}`));
    await p.execute(() => 2);
    await p.execute(() => Promise.reject(new Error('nope'))).catch(() => undefined);
    expect(events).toEqual(['success number', 'failure nope']);
    expect(p.stats()).toMatchObject({ calls: 3, successes: 2, failures: 1 });
  });

  it('KeelPolicy narrows by kind for metrics bindings', async () => {
    const { circuitBreaker: cb } = await import('./circuit-breaker.js');
    const policies: import('./keel-policy.js').KeelPolicy[] = [cb(), retry(), pipeline(retry())];
    const described = policies.map((p) => {
      switch (p.kind) {
        case 'circuitBreaker':
          return `breaker ${p.stats().state}`;
        case 'retry':
          return `retry ${p.stats().retries}`;
        case 'pipeline':
          return `pipeline of ${p.stats().policies.length}`;
        default:
          return p.kind;
      }
    });
    expect(described).toEqual(['breaker closed', 'retry 0', 'pipeline of 1']);
  });

  it('member success events carry a duration when listened to', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({ clock });
    const durations: (number | undefined)[] = [];
    const dispose = b.on('success', (e) => durations.push(e.durationMs));
    await pipeline(retry({ clock }), b).execute(() => 1);
    dispose();
    await b.execute(() => 1);
    expect(durations.length).toBe(1);
    expect(typeof durations[0]).toBe('number');
  });
});
