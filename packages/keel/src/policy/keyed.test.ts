import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../time/index.js';
import { consecutive } from './breaker/consecutive.js';
import { circuitBreaker } from './circuit-breaker.js';
import { keyed } from './keyed.js';

describe('keyed', () => {
  it('gives one policy per key, made on first use', async () => {
    let made = 0;
    const reg = keyed((host: string) => {
      made++;
      return circuitBreaker({ name: host, window: consecutive(1) });
    });
    expect(reg.get('a')).toBe(reg.get('a'));
    expect(reg.get('b')).not.toBe(reg.get('a'));
    expect(made).toBe(2);
    await reg
      .execute('a', () => Promise.reject(Object.assign(new Error('x'), { code: 'ECONNRESET' })))
      .catch(() => undefined);
    expect(reg.get('a').state).toBe('open');
    expect(reg.get('b').state).toBe('closed');
    const typed: string = await reg.execute('b', () => 'ok');
    expect(typed).toBe('ok');
  });

  it('drops the least recently used key beyond maxKeys', () => {
    const reg = keyed((k: number) => circuitBreaker({ name: String(k) }), { maxKeys: 3 });
    reg.get(1);
    reg.get(2);
    reg.get(3);
    reg.get(1); // 2 is now the least recently used
    reg.get(4);
    expect(reg.size).toBe(3);
    expect(reg.has(2)).toBe(false);
    expect(reg.entries().map(([k]) => k)).toEqual([3, 1, 4]);
    expect(reg.evictions).toBe(1);
  });

  it('drops keys idle for idleMs', async () => {
    const clock = new VirtualClock();
    const reg = keyed(() => circuitBreaker(), { idleMs: 1000, clock });
    reg.get('old');
    await clock.advance(600);
    reg.get('recent');
    await clock.advance(600);
    expect(reg.entries().map(([k]) => k)).toEqual(['recent']);
    reg.delete('recent');
    expect(reg.size).toBe(0);
  });

  it('tells onEvict of each key dropped for size or idleness, with its policy', async () => {
    const clock = new VirtualClock();
    const dropped: [string, string | undefined][] = [];
    const reg = keyed((k: string) => circuitBreaker({ name: k }), {
      maxKeys: 2,
      idleMs: 1000,
      clock,
      onEvict: (key, policy) => dropped.push([key, policy.name]),
    });
    reg.get('a');
    reg.get('b');
    reg.get('c'); // over maxKeys: a goes
    expect(dropped).toEqual([['a', 'a']]);
    await clock.advance(1000);
    reg.get('d'); // b and c idle for 1 s: both go
    expect(dropped).toEqual([
      ['a', 'a'],
      ['b', 'b'],
      ['c', 'c'],
    ]);
    reg.delete('d'); // an explicit delete is the caller's own doing: not reported
    expect(dropped).toHaveLength(3);
  });
});
