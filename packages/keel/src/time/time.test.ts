import { describe, expect, it } from 'vitest';
import { DeadlineScheduler, VirtualClock, deadlineScheduler, systemClock } from './index.js';

describe('VirtualClock', () => {
  it('fires timers in due order only when advanced past them', async () => {
    const clock = new VirtualClock(1000);
    const fired: string[] = [];
    clock.setTimer(30, () => fired.push('c'));
    clock.setTimer(10, () => fired.push('a'));
    clock.setTimer(10, () => fired.push('b'));
    await clock.advance(9);
    expect(fired).toEqual([]);
    await clock.advance(1);
    expect(fired).toEqual(['a', 'b']);
    expect(clock.now()).toBe(1010);
    await clock.advance(100);
    expect(fired).toEqual(['a', 'b', 'c']);
    expect(clock.now()).toBe(1110);
  });

  it('runs promise continuations between timers so chained sleeps complete in one advance', async () => {
    const clock = new VirtualClock();
    const steps: number[] = [];
    const chain = (async () => {
      await clock.sleep(10);
      steps.push(clock.now());
      await clock.sleep(10);
      steps.push(clock.now());
    })();
    await clock.advance(25);
    await chain;
    expect(steps).toEqual([10, 20]);
  });

  it('rejects a sleep at once when its signal aborts and drops the timer', async () => {
    const clock = new VirtualClock();
    const controller = new AbortController();
    const sleeping = clock.sleep(1000, controller.signal);
    controller.abort(new Error('stop'));
    await expect(sleeping).rejects.toThrow('stop');
    expect(clock.pendingTimers()).toBe(0);
  });

  it('rejects a sleep with an already-aborted signal', async () => {
    const clock = new VirtualClock();
    await expect(clock.sleep(5, AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('runAll fires timers scheduled by timers and refuses endless rescheduling', async () => {
    const clock = new VirtualClock();
    let count = 0;
    const tick = (): void => {
      count++;
      if (count < 5) clock.setTimer(100, tick);
    };
    clock.setTimer(100, tick);
    await clock.runAll();
    expect(count).toBe(5);
    expect(clock.now()).toBe(500);
    const forever = (): void => void clock.setTimer(1, forever);
    clock.setTimer(1, forever);
    await expect(clock.runAll(50)).rejects.toThrow(RangeError);
  });

  it('rejects negative advances', async () => {
    await expect(new VirtualClock().advance(-1)).rejects.toThrow(RangeError);
  });
});

describe('DeadlineScheduler', () => {
  it('fires deadlines in order off a single clock timer', async () => {
    const clock = new VirtualClock();
    const scheduler = new DeadlineScheduler(clock);
    const fired: number[] = [];
    for (const d of [50, 10, 30, 20, 40]) scheduler.schedule(d, () => fired.push(d));
    expect(clock.pendingTimers()).toBe(1);
    await clock.advance(25);
    expect(fired).toEqual([10, 20]);
    await clock.advance(100);
    expect(fired).toEqual([10, 20, 30, 40, 50]);
    expect(scheduler.size).toBe(0);
  });

  it('never fires a cancelled deadline and disarms when none are left', async () => {
    const clock = new VirtualClock();
    const scheduler = new DeadlineScheduler(clock);
    const fired: string[] = [];
    const a = scheduler.schedule(10, () => fired.push('a'));
    scheduler.schedule(20, () => fired.push('b'));
    a.cancel();
    a.cancel();
    expect(scheduler.size).toBe(1);
    await clock.advance(30);
    expect(fired).toEqual(['b']);
    const c = scheduler.schedule(10, () => fired.push('c'));
    c.cancel();
    expect(clock.pendingTimers()).toBe(0);
  });

  it('re-arms earlier when a sooner deadline arrives', async () => {
    const clock = new VirtualClock();
    const scheduler = new DeadlineScheduler(clock);
    const fired: number[] = [];
    scheduler.schedule(100, () => fired.push(100));
    scheduler.schedule(5, () => fired.push(5));
    await clock.advance(6);
    expect(fired).toEqual([5]);
  });

  it('stays correct through many schedule/cancel cycles (heap compaction)', async () => {
    const clock = new VirtualClock();
    const scheduler = new DeadlineScheduler(clock);
    const fired: number[] = [];
    const keep: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const h = scheduler.schedule(1000 - i, () => fired.push(i));
      if (i % 7 === 0) keep.push(i);
      else h.cancel();
    }
    expect(scheduler.size).toBe(keep.length);
    await clock.advance(2000);
    expect(fired).toEqual([...keep].reverse());
  });

  it('keeps firing other deadlines when one callback throws', async () => {
    const clock = new VirtualClock();
    const scheduler = new DeadlineScheduler(clock);
    const fired: string[] = [];
    const errors: unknown[] = [];
    const onError = (e: unknown): void => void errors.push(e);
    process.on('uncaughtException', onError);
    try {
      scheduler.schedule(1, () => {
        throw new Error('boom');
      });
      scheduler.schedule(1, () => fired.push('after'));
      await clock.advance(1);
      expect(fired).toEqual(['after']);
    } finally {
      process.off('uncaughtException', onError);
    }
  });

  it('shares one scheduler per clock', () => {
    const clock = new VirtualClock();
    expect(deadlineScheduler(clock)).toBe(deadlineScheduler(clock));
    expect(deadlineScheduler()).toBe(deadlineScheduler(systemClock));
  });
});

describe('systemClock', () => {
  it('reports epoch milliseconds and its timers do not keep the process alive', () => {
    const before = Date.now();
    expect(systemClock.now()).toBeGreaterThanOrEqual(before);
    const handle = systemClock.setTimer(60_000, () => undefined);
    handle.cancel();
  });
});
