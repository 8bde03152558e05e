import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../time/index.js';
import { adaptiveThrottle } from './adaptive-throttle.js';

const overloaded = () => Promise.reject(Object.assign(new Error('busy'), { status: 503 }));

describe('adaptiveThrottle', () => {
  it('never rejects while the backend accepts everything', async () => {
    const t = adaptiveThrottle({ clock: new VirtualClock(), random: () => 0 });
    for (let i = 0; i < 100; i++) await t.execute(() => 'ok');
    expect(t.stats()).toMatchObject({ requests: 100, accepts: 100, rejectProbability: 0, rejections: 0 });
  });

  it('rejects with probability max(0, (requests - k·accepts) / (requests + 1))', async () => {
    const clock = new VirtualClock();
    let roll = 0.999;
    const t = adaptiveThrottle({ clock, k: 2, random: () => roll });
    for (let i = 0; i < 10; i++) await t.execute(() => 'ok');
    for (let i = 0; i < 30; i++) await t.execute(overloaded).catch(() => undefined);
    // 40 requests, 10 accepts: (40 - 20) / 41
    expect(t.rejectProbability).toBeCloseTo(20 / 41, 10);
    roll = 0.4; // below the probability: rejected locally, without calling
    let called = false;
    const err = await t
      .execute(() => {
        called = true;
      })
      .catch((e: unknown) => e);
    expect(called).toBe(false);
    expect(err).toMatchObject({ code: 'THROTTLED' });
    expect(t.stats().requests).toBe(41); // local rejections count as requests
  });

  it('client errors count as accepts (the backend answered)', async () => {
    const t = adaptiveThrottle({ clock: new VirtualClock(), random: () => 0 });
    for (let i = 0; i < 10; i++) {
      await t
        .execute(() => Promise.reject(Object.assign(new Error('nope'), { status: 404 })))
        .catch(() => undefined);
    }
    expect(t.stats()).toMatchObject({ accepts: 10, rejectProbability: 0 });
  });

  it('forgets counts older than its window', async () => {
    const clock = new VirtualClock();
    const t = adaptiveThrottle({ clock, windowMs: 120_000, buckets: 12 });
    for (let i = 0; i < 20; i++) await t.execute(overloaded).catch(() => undefined);
    expect(t.rejectProbability).toBeGreaterThan(0.5);
    await clock.advance(120_000);
    expect(t.stats()).toMatchObject({ requests: 0, accepts: 0, rejectProbability: 0 });
  });
});
