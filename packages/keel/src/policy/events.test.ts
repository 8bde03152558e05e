import { describe, expect, it } from 'vitest';
import { Emitter, timedEmitters, type CommonEvents } from './events.js';

describe('Emitter', () => {
  it('delivers to listeners until disposed, and a throwing listener does not stop the others', async () => {
    const e = new Emitter<CommonEvents>();
    const seen: string[] = [];
    const errors: unknown[] = [];
    const onError = (err: unknown): void => void errors.push(err);
    process.on('uncaughtException', onError);
    try {
      e.on('failure', () => {
        throw new Error('listener bug');
      });
      const dispose = e.on('failure', (ev) => seen.push((ev.error as Error).message));
      e.emit('failure', { error: new Error('a') });
      dispose();
      e.emit('failure', { error: new Error('b') });
      await new Promise((r) => setImmediate(r));
      expect(seen).toEqual(['a']);
      expect(errors).toHaveLength(2);
    } finally {
      process.off('uncaughtException', onError);
    }
  });

  it('tracks whether anyone listens for durations', () => {
    const before = timedEmitters.count;
    const e = new Emitter<CommonEvents>();
    expect(e.timed).toBe(false);
    const d1 = e.on('success', () => undefined);
    const d2 = e.on('failure', () => undefined);
    expect(e.timed).toBe(true);
    expect(timedEmitters.count).toBe(before + 1);
    d1();
    expect(e.timed).toBe(true);
    d2();
    expect(e.timed).toBe(false);
    expect(timedEmitters.count).toBe(before);
    expect(e.has('rejected')).toBe(false);
  });
});
