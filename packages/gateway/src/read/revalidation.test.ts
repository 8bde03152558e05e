import { describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import { Revalidator } from './revalidation.js';

/** An origin answer the test settles by hand. */
function pending<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('Revalidator', () => {
  it('shares one revalidation between concurrent callers', async () => {
    const r = new Revalidator<string>(new VirtualClock());
    const answer = pending<string>();
    let asked = 0;
    const ask = (): Promise<string> => {
      asked++;
      return answer.promise;
    };
    const all = Array.from({ length: 10 }, () => r.revalidate('h', { etag: '"a"' }, ask));
    answer.resolve('fresh');
    for (const o of await Promise.all(all)) expect(o).toEqual({ state: 'fresh', value: 'fresh' });
    expect(asked).toBe(1);
    // Settled and nothing to wait for: the next caller asks again.
    await r.revalidate('h', { etag: '"a"' }, () => Promise.resolve('again'));
    expect(r.size()).toBe(0);
  });

  it('answers stale at the timeout and aborts the request', async () => {
    const clock = new VirtualClock();
    const r = new Revalidator<string>(clock, { timeoutMs: 500 });
    let signal: AbortSignal | undefined;
    const outcome = r.revalidate('h', { etag: '"a"' }, (s) => {
      signal = s;
      return new Promise<string>(() => undefined);
    });
    await clock.advance(499);
    expect(signal?.aborted).toBe(false);
    await clock.advance(1);
    const o = await outcome;
    expect(o.state).toBe('stale');
    expect(o.state === 'stale' && o.error.code).toBe('TIMEOUT');
    expect(signal?.aborted).toBe(true);
  });

  it('backs off per object after failures, doubling up to the maximum, and forgets after a success', async () => {
    const clock = new VirtualClock();
    const r = new Revalidator<string>(clock, { backoffMs: 100, maxBackoffMs: 300 });
    let asked = 0;
    const failing = (): Promise<string> => {
      asked++;
      return Promise.reject(new Error('ECONNRESET'));
    };
    const expectStaleAfter = async (advanceMs: number, askedNow: number): Promise<void> => {
      await clock.advance(advanceMs);
      expect((await r.revalidate('h', { etag: '"a"' }, failing)).state).toBe('stale');
      expect(asked).toBe(askedNow);
    };
    await expectStaleAfter(0, 1);
    await expectStaleAfter(99, 1); // backing off 100 ms
    await expectStaleAfter(1, 2); // now 200 ms
    await expectStaleAfter(199, 2);
    await expectStaleAfter(1, 3); // now 300 ms (the maximum)
    await expectStaleAfter(300, 4); // still 300 ms
    expect(r.stats).toMatchObject({ started: 4, failed: 4 });
    // Another object is not held back by this one.
    expect(await r.revalidate('other', { etag: '"a"' }, () => Promise.resolve('ok'))).toEqual({
      state: 'fresh',
      value: 'ok',
    });
    await clock.advance(300);
    expect(await r.revalidate('h', { etag: '"a"' }, () => Promise.resolve('ok'))).toEqual({
      state: 'fresh',
      value: 'ok',
    });
    expect(r.size()).toBe(0);
  });

  it('does not hold a new version back for the failures of the old one', async () => {
    const r = new Revalidator<string>(new VirtualClock(), { backoffMs: 10_000 });
    await r.revalidate('h', { etag: '"old"' }, () => Promise.reject(new Error('boom')));
    expect((await r.revalidate('h', { etag: '"old"' }, () => Promise.resolve('x'))).state).toBe('stale');
    expect(await r.revalidate('h', { etag: '"new"' }, () => Promise.resolve('x'))).toEqual({
      state: 'fresh',
      value: 'x',
    });
  });

  it('keeps a fresh answer shared until its metadata write settles', async () => {
    const r = new Revalidator<string>(new VirtualClock());
    const written = pending<void>();
    await r.revalidate(
      'h',
      { etag: '"a"' },
      () => Promise.resolve('refreshed'),
      () => written.promise,
    );
    let asked = 0;
    const again = await r.revalidate('h', { etag: '"a"' }, () => {
      asked++;
      return Promise.resolve('second');
    });
    expect(again).toEqual({ state: 'fresh', value: 'refreshed' });
    expect(asked).toBe(0);
    written.resolve();
    await written.promise;
    await new Promise((resolve) => setImmediate(resolve));
    expect(r.size()).toBe(0);
  });

  it('rejects a timeout that is not a positive number, naming it', () => {
    expect(() => new Revalidator(new VirtualClock(), { timeoutMs: 0 })).toThrow(/timeoutMs/);
  });
});
