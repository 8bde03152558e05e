import { describe, expect, it } from 'vitest';
import { fallback } from './fallback.js';

describe('fallback', () => {
  it('passes a success through untouched', async () => {
    const f = fallback('stale');
    await expect(f.execute(() => 'fresh')).resolves.toBe('fresh');
    expect(f.stats()).toMatchObject({ fallbacks: 0, successes: 1 });
  });

  it('substitutes a value on failure and reports it', async () => {
    const f = fallback('stale');
    const seen: unknown[] = [];
    f.on('fallback', (e) => seen.push(e.error));
    const boom = new Error('boom');
    await expect(f.execute(() => Promise.reject(boom))).resolves.toBe('stale');
    expect(seen).toEqual([boom]);
    expect(f.stats()).toMatchObject({ fallbacks: 1, successes: 1, failures: 0 });
  });

  it('calls a function of the classified error', async () => {
    const f = fallback((err) => `fell back after ${err.code}`);
    const result = await f.execute(() =>
      Promise.reject(Object.assign(new Error('x'), { code: 'ECONNRESET' })),
    );
    expect(result).toBe('fell back after NETWORK_RESET');
  });

  it('only handles what shouldHandle accepts', async () => {
    const f = fallback(0, { shouldHandle: (e) => e.retryable });
    const notFound = Object.assign(new Error('x'), { code: 'ENOENT' });
    await expect(f.execute(() => Promise.reject(notFound))).rejects.toBe(notFound);
  });

  it('a throwing substitute fails the call with its error', async () => {
    const f = fallback(() => {
      throw new Error('no cache either');
    });
    await expect(f.execute(() => Promise.reject(new Error('x')))).rejects.toThrow('no cache either');
    expect(f.stats().failures).toBe(1);
  });
});
