import { describe, expect, it } from 'vitest';
import { keelError } from '../errors/index.js';
import { VirtualClock } from '../time/index.js';
import { constant, exponential } from './backoff.js';
import type { RetryEvents } from './events.js';
import { retry } from './retry.js';
import { retryBudget } from './retry-budget.js';

const transient = (n = 0): Error => Object.assign(new Error(`reset ${n}`), { code: 'ECONNRESET' });

/** A function failing `failures` times with a retryable error, then returning 'ok'. */
function flaky(failures: number) {
  const calls: { attempt: number; at: number }[] = [];
  let clock: VirtualClock | undefined;
  const fn = ({ attempt }: { attempt: number }) => {
    calls.push({ attempt, at: clock?.now() ?? 0 });
    if (calls.length <= failures) return Promise.reject(transient(calls.length));
    return Promise.resolve('ok');
  };
  return { fn, calls, useClock: (c: VirtualClock) => (clock = c) };
}

describe('retry', () => {
  it('returns at once when the first attempt succeeds', async () => {
    const policy = retry();
    await expect(policy.execute(() => 42)).resolves.toBe(42);
    expect(policy.stats()).toMatchObject({ calls: 1, successes: 1, failures: 0, retries: 0 });
  });

  it('retries retryable failures after the backoff delays and reports attempt numbers', async () => {
    const clock = new VirtualClock();
    const f = flaky(2);
    f.useClock(clock);
    const policy = retry({ clock, maxAttempts: 3, backoff: exponential({ initialMs: 100, jitter: 'none' }) });
    const events: RetryEvents['retry'][] = [];
    policy.on('retry', (e) => events.push(e));
    const result = policy.execute(f.fn);
    await clock.advance(99);
    expect(f.calls.length).toBe(1);
    await clock.advance(1);
    expect(f.calls.length).toBe(2);
    await clock.advance(200);
    await expect(result).resolves.toBe('ok');
    expect(f.calls).toEqual([
      { attempt: 1, at: 0 },
      { attempt: 2, at: 100 },
      { attempt: 3, at: 300 },
    ]);
    expect(events.map((e) => [e.attempt, e.delayMs])).toEqual([
      [2, 100],
      [3, 200],
    ]);
    expect(policy.stats()).toMatchObject({ retries: 2, retrySuccesses: 1, successes: 1 });
  });

  it('throws RETRIES_EXHAUSTED with the last error as cause and every attempt in details', async () => {
    const clock = new VirtualClock();
    const f = flaky(10);
    const policy = retry({ clock, maxAttempts: 3, backoff: constant(10) });
    const gaveUp: RetryEvents['giveUp'][] = [];
    policy.on('giveUp', (e) => gaveUp.push(e));
    const result = policy.execute(f.fn);
    const settled = result.catch((e: unknown) => e);
    await clock.advance(100);
    const err = (await settled) as { code: string; cause: Error; details: { attempts: unknown[] } };
    expect(err.code).toBe('RETRIES_EXHAUSTED');
    expect(err.cause.message).toBe('reset 3');
    expect(err.details.attempts).toEqual([
      { attempt: 1, code: 'NETWORK_RESET', message: expect.any(String), delayMs: 10 },
      { attempt: 2, code: 'NETWORK_RESET', message: expect.any(String), delayMs: 10 },
      { attempt: 3, code: 'NETWORK_RESET', message: expect.any(String) },
    ]);
    expect(gaveUp).toEqual([{ attempts: 3, error: expect.any(Error), reason: 'attempts' }]);
    expect(policy.stats()).toMatchObject({ failures: 1, givenUp: 1, retries: 2 });
  });

  it('does not retry non-retryable errors and rethrows them unchanged', async () => {
    const policy = retry({ backoff: constant(0) });
    const notFound = Object.assign(new Error('missing'), { code: 'ENOENT' });
    let calls = 0;
    await expect(
      policy.execute(() => {
        calls++;
        throw notFound;
      }),
    ).rejects.toBe(notFound);
    expect(calls).toBe(1);
  });

  it('uses the shouldRetry predicate instead of classify when given', async () => {
    const clock = new VirtualClock();
    let calls = 0;
    const policy = retry({
      clock,
      backoff: constant(0),
      maxAttempts: 4,
      shouldRetry: (e) => e.code === 'NOT_FOUND',
    });
    const result = policy.execute(() => {
      calls++;
      throw Object.assign(new Error('missing'), { code: 'ENOENT' });
    });
    await expect(result).rejects.toMatchObject({ code: 'RETRIES_EXHAUSTED' });
    expect(calls).toBe(4);
  });

  it('never retries forever by default', async () => {
    let calls = 0;
    const policy = retry({ backoff: constant(0) });
    await expect(
      policy.execute(() => {
        calls++;
        throw transient();
      }),
    ).rejects.toMatchObject({ code: 'RETRIES_EXHAUSTED' });
    expect(calls).toBe(3);
  });

  it('honours Retry-After, clamped to maxRetryAfterMs', async () => {
    const clock = new VirtualClock();
    const times: number[] = [];
    const policy = retry({ clock, backoff: constant(10), maxAttempts: 3, maxRetryAfterMs: 5000 });
    const result = policy.execute(() => {
      times.push(clock.now());
      if (times.length === 1)
        throw keelError('RATE_LIMITED', 'slow down', { retryAfterMs: 2000 }, { retryable: true });
      if (times.length === 2)
        throw keelError('RATE_LIMITED', 'slow down', { retryAfterMs: 60_000 }, { retryable: true });
      return 'done';
    });
    await clock.advance(10_000);
    await expect(result).resolves.toBe('done');
    expect(times).toEqual([0, 2000, 7000]);
  });

  it('reads Retry-After from an HTTP-like error through classify', async () => {
    const clock = new VirtualClock();
    const times: number[] = [];
    const policy = retry({ clock, backoff: constant(1) });
    const result = policy.execute(() => {
      times.push(clock.now());
      if (times.length === 1) throw { status: 503, headers: { 'retry-after': '3' } };
      return 'ok';
    });
    await clock.advance(5000);
    await expect(result).resolves.toBe('ok');
    expect(times).toEqual([0, 3000]);
  });

  it('stops when the next wait would pass maxElapsedMs', async () => {
    const clock = new VirtualClock();
    let calls = 0;
    const policy = retry({ clock, maxAttempts: 10, backoff: constant(400), maxElapsedMs: 1000 });
    const reasons: string[] = [];
    policy.on('giveUp', (e) => reasons.push(e.reason));
    const result = policy
      .execute(() => {
        calls++;
        throw transient();
      })
      .catch((e: unknown) => e);
    await clock.advance(5000);
    expect(await result).toMatchObject({ code: 'RETRIES_EXHAUSTED' });
    expect(calls).toBe(3); // at 0, 400, 800; a wait to 1200 would pass the limit
    expect(reasons).toEqual(['elapsed']);
  });

  it('stops at an absolute deadline', async () => {
    const clock = new VirtualClock(1000);
    let calls = 0;
    const policy = retry({ clock, maxAttempts: 10, backoff: constant(100), deadline: 1250 });
    const result = policy
      .execute(() => {
        calls++;
        throw transient();
      })
      .catch((e: unknown) => e);
    await clock.advance(5000);
    expect(await result).toMatchObject({ code: 'RETRIES_EXHAUSTED' });
    expect(calls).toBe(3);
  });

  it('an abort cancels the wait at once with ABORTED', async () => {
    const clock = new VirtualClock();
    const controller = new AbortController();
    const policy = retry({ clock, backoff: constant(60_000) });
    const reasons: string[] = [];
    policy.on('giveUp', (e) => reasons.push(e.reason));
    const result = policy
      .execute(
        () => {
          throw transient();
        },
        { signal: controller.signal },
      )
      .catch((e: unknown) => e);
    await clock.advance(10);
    controller.abort(new Error('user cancelled'));
    expect(await result).toMatchObject({ code: 'ABORTED' });
    expect(reasons).toEqual(['aborted']);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('refuses to start with an already aborted signal', async () => {
    let calls = 0;
    await expect(
      retry().execute(
        () => {
          calls++;
        },
        { signal: AbortSignal.abort() },
      ),
    ).rejects.toMatchObject({ code: 'ABORTED' });
    expect(calls).toBe(0);
  });

  it('onRetry and onGiveUp options receive the events', async () => {
    const seen: string[] = [];
    const policy = retry({
      maxAttempts: 2,
      backoff: constant(0),
      onRetry: (e) => seen.push(`retry ${e.attempt}`),
      onGiveUp: (e) => seen.push(`giveUp ${e.attempts}`),
    });
    await policy
      .execute(() => {
        throw transient();
      })
      .catch(() => undefined);
    expect(seen).toEqual(['retry 2', 'giveUp 2']);
  });

  it('a listener removed by its dispose function hears nothing more', async () => {
    const policy = retry({ maxAttempts: 2, backoff: constant(0) });
    let heard = 0;
    const dispose = policy.on('retry', () => heard++);
    dispose();
    dispose();
    await policy.execute(() => Promise.reject(transient())).catch(() => undefined);
    expect(heard).toBe(0);
  });

  it('rejects an invalid maxAttempts', () => {
    expect(() => retry({ maxAttempts: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
  });
});

describe('retry with a budget', () => {
  it('stops retrying with RETRY_BUDGET_EXHAUSTED when the shared budget is spent', async () => {
    const clock = new VirtualClock();
    const budget = retryBudget({ clock, maxTokens: 10, retryCost: 5, ratio: 0, minPerSecond: 0 });
    const a = retry({ clock, budget, backoff: constant(0), maxAttempts: 5 });
    const b = retry({ clock, budget, backoff: constant(0), maxAttempts: 5 });
    let calls = 0;
    const failing = () => {
      calls++;
      return Promise.reject(transient());
    };
    const first = await a.execute(failing).catch((e: unknown) => e);
    expect(first).toMatchObject({ code: 'RETRY_BUDGET_EXHAUSTED' });
    expect(calls).toBe(3); // two retries of cost 5 spent the 10 tokens
    calls = 0;
    const second = await b.execute(failing).catch((e: unknown) => e);
    expect(second).toMatchObject({ code: 'RETRY_BUDGET_EXHAUSTED', cause: expect.any(Error) });
    expect((second as Error).message).toMatch(/too many retries/);
    expect(calls).toBe(1);
    expect(budget.stats()).toMatchObject({ retriesAllowed: 2, retriesRefused: 2 });
  });

  it('earns tokens from calls and time, and refunds successful retries', async () => {
    const clock = new VirtualClock();
    const budget = retryBudget({ clock, maxTokens: 100, retryCost: 5, ratio: 0.1, minPerSecond: 1 });
    for (let i = 0; i < 100; i++) budget.tryWithdraw();
    expect(budget.stats().tokens).toBe(0);
    for (let i = 0; i < 10; i++) budget.deposit(); // 10 calls × 0.1 × 5 = 5 tokens: one retry
    expect(budget.tryWithdraw()).toBe(true);
    expect(budget.tryWithdraw()).toBe(false);
    await clock.advance(1000); // 1 retry/s = 5 tokens
    expect(budget.tryWithdraw()).toBe(true);
    budget.refund();
    expect(budget.stats().tokens).toBe(5);
    const timeout = { code: 'TIMEOUT' } as Parameters<typeof budget.tryWithdraw>[0];
    expect(budget.tryWithdraw(timeout)).toBe(false); // a timeout retry costs 10
  });

  it('inside a retry in a pipeline it turns away attempts after the first', async () => {
    const { pipeline } = await import('./pipeline.js');
    const budget = retryBudget({ maxTokens: 5, retryCost: 5, ratio: 0, minPerSecond: 0 });
    let calls = 0;
    const p = pipeline(retry({ maxAttempts: 5, backoff: constant(0) }), budget);
    const err = await p
      .execute(() => {
        calls++;
        throw transient();
      })
      .catch((e: unknown) => e);
    expect(calls).toBe(2);
    expect(err).toMatchObject({ code: 'RETRY_BUDGET_EXHAUSTED' });
    expect(budget.stats().rejections).toBe(1);
  });
});

describe('retry properties', () => {
  it('calls at most maxAttempts times and succeeds exactly when a call within them succeeds', async () => {
    const fc = (await import('fast-check')).default;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 8 }),
        async (maxAttempts, failures) => {
          const clock = new VirtualClock();
          const policy = retry({
            clock,
            maxAttempts,
            backoff: exponential({ initialMs: 10, jitter: 'full' }),
          });
          let calls = 0;
          const result = policy
            .execute(() => (++calls <= failures ? Promise.reject(transient(calls)) : Promise.resolve('ok')))
            .then(
              (v) => v,
              (e: unknown) => (e as { code: string }).code,
            );
          await clock.runAll();
          const outcome = await result;
          expect(calls).toBe(Math.min(failures + 1, maxAttempts));
          expect(outcome).toBe(failures < maxAttempts ? 'ok' : 'RETRIES_EXHAUSTED');
          expect(policy.stats().retries).toBe(calls - 1);
        },
      ),
      { numRuns: 80 },
    );
  });
});
