import { describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import { describeProgress, ProgressTracker, type ProgressSnapshot } from './index.js';

describe('ProgressTracker', () => {
  it('reports done of total, a smoothed speed and an ETA, with events at a bounded rate', async () => {
    const clock = new VirtualClock();
    const t = new ProgressTracker({ total: 10_000, clock, intervalMs: 100 });
    const events: ProgressSnapshot[] = [];
    t.on('progress', (s) => events.push(s));
    for (let i = 0; i < 50; i++) {
      await clock.advance(20);
      t.add(40); // 2000 bytes/s
    }
    expect(events.length).toBeLessThanOrEqual(11); // 1000 ms at most one per 100 ms
    expect(events.length).toBeGreaterThanOrEqual(9);
    const s = t.snapshot();
    expect(s).toMatchObject({ done: 2000, total: 10_000, percent: 20 });
    expect(s.bytesPerSec).toBeCloseTo(2000, -1);
    expect(s.etaMs).toBeCloseTo(4000, -2);
    let done = 0;
    t.on('done', () => done++);
    t.finish();
    t.finish();
    expect(done).toBe(1);
  });

  it('does not count resumed bytes as speed, and works without a total', async () => {
    const clock = new VirtualClock();
    const t = new ProgressTracker({ initial: 1_000_000, clock, intervalMs: 100 });
    await clock.advance(100);
    t.add(100);
    expect(t.snapshot()).toMatchObject({
      done: 1_000_100,
      total: undefined,
      percent: undefined,
      etaMs: undefined,
    });
    expect(t.snapshot().bytesPerSec).toBeCloseTo(1000, -1);
    expect(describeProgress(t.snapshot())).toMatch(/976\.7 KiB, 1000 B\/s/);
  });
});
