import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../time/index.js';
import { hedge } from './hedge.js';
import type { PolicyContext } from './policy.js';

describe('hedge', () => {
  it('does not hedge a call that answers before delayMs', async () => {
    const clock = new VirtualClock();
    const h = hedge({ clock, delayMs: 100 });
    let calls = 0;
    const result = h.execute(async () => {
      calls++;
      await clock.sleep(50);
      return 'fast';
    });
    await clock.advance(200);
    await expect(result).resolves.toBe('fast');
    expect(calls).toBe(1);
    expect(h.stats()).toMatchObject({ hedges: 0 });
  });

  it('starts another attempt after delayMs; the first success wins and the loser is aborted', async () => {
    const clock = new VirtualClock();
    const h = hedge({ clock, delayMs: 100, maxHedges: 2 });
    const signals: AbortSignal[] = [];
    const started: number[] = [];
    const result = h.execute(async ({ signal, attempt }: PolicyContext) => {
      signals.push(signal);
      started.push(clock.now());
      await clock.sleep(attempt === 1 ? 1000 : 30);
      return `attempt ${attempt}`;
    });
    await clock.advance(130);
    await expect(result).resolves.toBe('attempt 2');
    expect(started).toEqual([0, 100]);
    expect(signals[0]!.aborted).toBe(true);
    expect(signals[1]!.aborted).toBe(false);
    expect(h.stats()).toMatchObject({ hedges: 1, hedgeWins: 1, successes: 1 });
  });

  it('a failed attempt starts the next at once; all failing throws the last error', async () => {
    const clock = new VirtualClock();
    const h = hedge({ clock, delayMs: 1000, maxHedges: 2 });
    let calls = 0;
    const result = h
      .execute(() => {
        calls++;
        return Promise.reject(new Error(`fail ${calls}`));
      })
      .catch((e: unknown) => e);
    await clock.advance(0);
    expect(((await result) as Error).message).toBe('fail 3');
    expect(calls).toBe(3);
    expect(clock.pendingTimers()).toBe(0);
  });
});
