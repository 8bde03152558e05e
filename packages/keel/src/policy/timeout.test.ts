import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../time/index.js';
import type { PolicyContext } from './policy.js';
import { timeout } from './timeout.js';

/** A function that waits for its signal and rejects with the abort reason (as fetch does). */
const honoursSignal = ({ signal }: PolicyContext) =>
  new Promise<string>((_resolve, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason as Error));
  });

describe('timeout', () => {
  it('cooperative: aborts the signal at the deadline and fails with TIMEOUT naming the operation', async () => {
    const clock = new VirtualClock();
    const policy = timeout(100, { clock, name: 's3.getObject' });
    const seen: number[] = [];
    policy.on('timeout', (e) => seen.push(e.afterMs));
    const result = policy.execute(honoursSignal).catch((e: unknown) => e);
    await clock.advance(99);
    expect(policy.stats().inFlight).toBe(1);
    await clock.advance(6); // fires within the 5 ms resolution
    const err = (await result) as { code: string; message: string; retryable: boolean; details: object };
    expect(err.code).toBe('TIMEOUT');
    expect(err.retryable).toBe(true);
    expect(err.message).toBe('the call "s3.getObject" timed out after 100 ms (its signal was aborted)');
    expect(err.details).toMatchObject({ timeoutMs: 100, operation: 's3.getObject' });
    expect(seen).toEqual([100]);
    expect(policy.stats()).toMatchObject({ timeouts: 1, failures: 1, inFlight: 0 });
  });

  it('never fires before timeoutMs and at most resolutionMs late', async () => {
    const clock = new VirtualClock();
    const policy = timeout(1000, { clock, resolutionMs: 10 });
    let abortedAt = -1;
    const running = policy
      .execute(({ signal }) => {
        signal.addEventListener('abort', () => (abortedAt = clock.now()));
        return new Promise((_r, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason as Error)),
        );
      })
      .catch(() => undefined);
    await clock.advance(3); // a call starting mid-tick
    const second = policy
      .execute(
        ({ signal }) =>
          new Promise((_r, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error))),
      )
      .catch((e: unknown) => ({ e, at: clock.now() }));
    await clock.advance(2000);
    await running;
    expect(abortedAt).toBeGreaterThanOrEqual(1000);
    expect(abortedAt).toBeLessThanOrEqual(1010);
    const { at } = (await second) as { at: number };
    expect(at).toBeGreaterThanOrEqual(1003);
    expect(at).toBeLessThanOrEqual(1013);
  });

  it('cooperative: waits for a function that ignores the signal, and keeps its value', async () => {
    const clock = new VirtualClock();
    const policy = timeout(100, { clock });
    let aborted = false;
    const result = policy.execute(async (ctx) => {
      await clock.sleep(300);
      aborted = ctx.signal.aborted;
      return 'late';
    });
    await clock.advance(300);
    await expect(result).resolves.toBe('late');
    expect(aborted).toBe(true);
  });

  it('cooperative: a failure after the deadline is reported as TIMEOUT', async () => {
    const clock = new VirtualClock();
    const policy = timeout(100, { clock });
    const result = policy
      .execute(async () => {
        await clock.sleep(300);
        throw new Error('socket closed');
      })
      .catch((e: unknown) => e);
    await clock.advance(300);
    expect(await result).toMatchObject({ code: 'TIMEOUT' });
  });

  it('aggressive: rejects at the deadline without waiting for the function', async () => {
    const clock = new VirtualClock();
    const policy = timeout(100, { clock, strategy: 'aggressive' });
    let signal: AbortSignal | undefined;
    const result = policy
      .execute((ctx) => {
        signal = ctx.signal;
        return new Promise(() => undefined); // never settles
      })
      .catch((e: unknown) => e);
    await clock.advance(110);
    expect(await result).toMatchObject({ code: 'TIMEOUT' });
    expect(signal?.aborted).toBe(true);
    expect(policy.stats()).toMatchObject({ timeouts: 1, failures: 1, inFlight: 0 });
  });

  it('aggressive: passes values and errors through before the deadline', async () => {
    const policy = timeout(100, { clock: new VirtualClock(), strategy: 'aggressive' });
    await expect(policy.execute(() => 7)).resolves.toBe(7);
    await expect(policy.execute(() => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(policy.stats()).toMatchObject({ successes: 1, failures: 1, timeouts: 0 });
  });

  it('uses no per-call timer: one tick while calls are in flight, none when idle', async () => {
    const clock = new VirtualClock();
    const policy = timeout(1000, { clock });
    const done = [];
    for (let i = 0; i < 100; i++) done.push(policy.execute(() => clock.sleep(10)));
    expect(clock.pendingTimers()).toBe(1 + 100); // the tick + each function's own sleep
    await clock.advance(10);
    await Promise.all(done);
    await clock.advance(100);
    expect(clock.pendingTimers()).toBe(0);
    expect(policy.stats()).toMatchObject({ successes: 100, timeouts: 0, inFlight: 0 });
  });

  it('a function that never reads the signal gets none created', async () => {
    const policy = timeout(100, { clock: new VirtualClock() });
    const ctxs: PolicyContext[] = [];
    await policy.execute((ctx) => {
      ctxs.push(ctx);
      return 1;
    });
    expect((ctxs[0] as unknown as { controller: unknown }).controller).toBeUndefined();
  });

  it('the caller aborting reaches the function through ctx.signal', async () => {
    const clock = new VirtualClock();
    const controller = new AbortController();
    const result = timeout(1000, { clock })
      .execute(honoursSignal, { signal: controller.signal })
      .catch((e: unknown) => e);
    controller.abort(new Error('caller gave up'));
    expect(await result).toMatchObject({ message: 'caller gave up' });
  });

  it('rejects invalid settings', () => {
    expect(() => timeout(0)).toThrow(/timeoutMs/);
    expect(() => timeout(10, { strategy: 'eager' as 'aggressive' })).toThrow(/strategy/);
  });

  it('takes the time as ms in one options object, with the other options beside it', async () => {
    const clock = new VirtualClock();
    const policy = timeout({ ms: 100, clock, strategy: 'aggressive', name: 'report' });
    expect(policy).toMatchObject({ timeoutMs: 100, strategy: 'aggressive', name: 'report' });
    const result = policy.execute(() => new Promise(() => undefined)).catch((e: unknown) => e);
    await clock.advance(99);
    expect(policy.stats().timeouts).toBe(0);
    await clock.advance(11);
    expect(await result).toMatchObject({
      code: 'TIMEOUT',
      message: expect.stringContaining('"report" timed out after 100 ms') as unknown,
    });
  });

  it('names ms when an options object has no valid time', () => {
    const bad = [{}, { ms: 0 }, { ms: -5 }, { ms: Number.NaN }, { ms: '1000' }] as unknown as {
      ms: number;
    }[];
    for (const config of bad) {
      expect(() => timeout(config)).toThrow(/^timeout: ms must be a finite number > 0, got /);
    }
  });
});
