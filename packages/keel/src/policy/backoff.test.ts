import { describe, expect, it } from 'vitest';
import { constant, delays, exponential, linear } from './backoff.js';
import { retryPresets } from './retry.js';

/** A deterministic random source cycling through the given values. */
function seq(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

describe('backoff', () => {
  it('constant repeats its delay', () => {
    expect(delays(constant(250), 4)).toEqual([250, 250, 250, 250]);
  });

  it('linear grows by its step and stops at maxMs', () => {
    expect(delays(linear({ initialMs: 100, stepMs: 50, maxMs: 220 }), 5)).toEqual([100, 150, 200, 220, 220]);
  });

  it('exponential without jitter doubles up to the cap', () => {
    const b = exponential({ initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 'none' });
    expect(delays(b, 6)).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('is immutable: the same backoff gives the same sequence twice', () => {
    const b = exponential({ initialMs: 10, jitter: 'none' });
    const first = b.next();
    expect(first.next.next().delayMs).toBe(20);
    expect(b.next().delayMs).toBe(10);
    expect(delays(b, 3)).toEqual(delays(b, 3));
  });

  it('full jitter draws in [0, d]', () => {
    const b = exponential({ initialMs: 100, maxMs: 10_000, jitter: 'full', random: seq(0, 0.5, 0.999) });
    expect(delays(b, 3)).toEqual([0, 100, Math.round(0.999 * 400)]);
  });

  it('equal jitter draws in [d/2, d]', () => {
    const b = exponential({ initialMs: 100, jitter: 'equal', random: seq(0, 1 - 1e-9) });
    expect(delays(b, 2)).toEqual([50, 200]);
  });

  it('decorrelated jitter draws between initialMs and 3x the previous delay, capped', () => {
    const b = exponential({ initialMs: 100, maxMs: 500, jitter: 'decorrelated', random: seq(1 - 1e-9) });
    // previous starts at initialMs: 300, then up to 900 -> capped 500, stays at 500.
    expect(delays(b, 3)).toEqual([300, 500, 500]);
  });

  it('a numeric jitter spreads the delay by ±fraction', () => {
    const low = exponential({ initialMs: 100, jitter: 0.2, random: seq(0) });
    const high = exponential({ initialMs: 100, jitter: 0.2, random: seq(1 - 1e-9) });
    expect(low.next().delayMs).toBe(80);
    expect(high.next().delayMs).toBe(120);
  });

  it('never overflows after many steps', () => {
    const d = delays(exponential({ initialMs: 1, maxMs: 5000, jitter: 'none' }), 2000);
    expect(d.at(-1)).toBe(5000);
  });

  it('rejects invalid settings with INVALID_CONFIG', () => {
    expect(() => constant(-1)).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
    expect(() => exponential({ multiplier: 0.5 })).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG' }),
    );
    expect(() => exponential({ jitter: 2 })).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
  });

  it('presets are bounded as documented', () => {
    expect(retryPresets.default.maxAttempts).toBe(3);
    expect(retryPresets.aggressive.maxAttempts).toBe(5);
    expect(retryPresets.conservative.maxAttempts).toBe(2);
    const d = delays(retryPresets.default.backoff, 20);
    expect(Math.max(...d)).toBeLessThanOrEqual(10_000);
    expect(d[0]).toBeGreaterThanOrEqual(80);
    expect(d[0]).toBeLessThanOrEqual(120);
    expect(Math.max(...delays(retryPresets.conservative.backoff, 20))).toBeLessThanOrEqual(5_000);
    expect(Math.max(...delays(retryPresets.aggressive.backoff, 30))).toBeLessThanOrEqual(30_000);
  });
});
