import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../time/index.js';
import { retryBudget } from './retry-budget.js';

describe('retryBudget shared as copies (takeChange / applyChange)', () => {
  it('takeChange reports what calls, retries and refunds moved, not time refills, and starts again at zero', async () => {
    const clock = new VirtualClock();
    const b = retryBudget({ clock, maxTokens: 100, retryCost: 5, ratio: 0.1, minPerSecond: 1 });
    expect(b.tryWithdraw()).toBe(true);
    expect(b.tryWithdraw()).toBe(true);
    b.deposit();
    b.refund();
    expect(b.takeChange()).toBeCloseTo(-10 + 0.5 + 5);
    expect(b.takeChange()).toBe(0);
    await clock.advance(2_000); // refills 10 tokens
    expect(b.stats().tokens).toBeCloseTo(100);
    expect(b.takeChange()).toBe(0);
    b.deposit(); // already full: nothing moved
    expect(b.takeChange()).toBe(0);
  });

  it("two copies that apply each other's changes refuse a retry once the one budget is spent", () => {
    const clock = new VirtualClock();
    const options = { clock, maxTokens: 20, retryCost: 5, ratio: 0, minPerSecond: 0 };
    const a = retryBudget(options);
    const b = retryBudget(options);
    expect(a.tryWithdraw()).toBe(true);
    expect(a.tryWithdraw()).toBe(true);
    b.applyChange(a.takeChange());
    expect(b.tryWithdraw()).toBe(true);
    expect(b.tryWithdraw()).toBe(true);
    expect(b.tryWithdraw()).toBe(false);
    a.applyChange(b.takeChange());
    expect(a.tryWithdraw()).toBe(false);
    expect(a.stats().tokens).toBe(0);
  });

  it('applyChange stays within 0 … maxTokens, is not reported again, and rejects a change that is not a number', () => {
    const b = retryBudget({ clock: new VirtualClock(), maxTokens: 50, minPerSecond: 0 });
    b.applyChange(-80);
    expect(b.stats().tokens).toBe(0);
    b.applyChange(500);
    expect(b.stats().tokens).toBe(50);
    expect(b.takeChange()).toBe(0);
    expect(() => b.applyChange(Number.NaN)).toThrow(/finite number/);
    expect(() => b.applyChange(Number.POSITIVE_INFINITY)).toThrow(/finite number/);
  });

  it('copies kept in step after every operation hold what one budget would', () => {
    type Op = { copy: 0 | 1; op: 'deposit' | 'withdraw' | 'timeout' | 'refund' };
    const op = fc.record({
      copy: fc.constantFrom<0 | 1>(0, 1),
      op: fc.constantFrom<Op['op']>('deposit', 'withdraw', 'timeout', 'refund'),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const clock = new VirtualClock();
        const options = { clock, maxTokens: 40, retryCost: 5, timeoutCost: 10, ratio: 0.3, minPerSecond: 0 };
        const one = retryBudget(options);
        const copies = [retryBudget(options), retryBudget(options)] as const;
        for (const { copy, op: what } of ops) {
          const mine = copies[copy];
          const other = copies[copy === 0 ? 1 : 0];
          for (const b of [one, mine]) {
            if (what === 'deposit') b.deposit();
            else if (what === 'refund') b.refund();
            else b.tryWithdraw(what === 'timeout' ? ({ code: 'TIMEOUT' } as never) : undefined);
          }
          other.applyChange(mine.takeChange());
          expect(copies[0].stats().tokens).toBeCloseTo(one.stats().tokens, 9);
          expect(copies[1].stats().tokens).toBeCloseTo(one.stats().tokens, 9);
        }
      }),
    );
  });
});
