import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { evictionTarget, SliceIndex } from '../packages/keel/src/cache/eviction.js';

describe('slice index', () => {
  it('keeps size, slice and object counts through adds and removes, and orders by last access', () => {
    const ix = new SliceIndex();
    ix.add('a', { index: 0, length: 10, lastAccess: 5 });
    ix.add('a', { index: 1, length: 7, lastAccess: 1 });
    ix.add('a', { index: 1, length: 7, lastAccess: 1 }); // already indexed: no-op
    ix.add('b', { index: 0, length: 3, lastAccess: 3 });
    expect([ix.sizeBytes, ix.slices, ix.objectCount]).toEqual([20, 3, 2]);
    ix.touch('a', 1, 9);
    expect(ix.lruOrder().map((e) => `${e.hash}${e.index}`)).toEqual(['b0', 'a0', 'a1']);
    expect(ix.lruOrder('a').map((e) => `${e.hash}${e.index}`)).toEqual(['b0']);
    ix.remove('a', 0);
    ix.remove('a', 0);
    expect([ix.sizeBytes, ix.slices, ix.objectCount]).toEqual([10, 2, 2]);
    ix.removeObject('a');
    expect([ix.sizeBytes, ix.slices, ix.objectCount, ix.has('a', 1), ix.has('b', 0)]).toEqual([
      3,
      1,
      1,
      false,
      true,
    ]);
  });

  it('property: size is the sum of what is indexed, whatever the order of operations', () => {
    const op = fc.oneof(
      fc.record({
        t: fc.constant('add' as const),
        h: fc.constantFrom('a', 'b', 'c'),
        i: fc.nat(4),
        len: fc.nat(100),
      }),
      fc.record({ t: fc.constant('remove' as const), h: fc.constantFrom('a', 'b', 'c'), i: fc.nat(4) }),
      fc.record({ t: fc.constant('removeObject' as const), h: fc.constantFrom('a', 'b', 'c') }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const ix = new SliceIndex();
        const model = new Map<string, number>();
        for (const o of ops) {
          if (o.t === 'add') {
            ix.add(o.h, { index: o.i, length: o.len, lastAccess: 0 });
            if (!model.has(`${o.h}:${o.i}`)) model.set(`${o.h}:${o.i}`, o.len);
          } else if (o.t === 'remove') {
            ix.remove(o.h, o.i);
            model.delete(`${o.h}:${o.i}`);
          } else {
            ix.removeObject(o.h);
            for (const k of [...model.keys()]) if (k.startsWith(`${o.h}:`)) model.delete(k);
          }
        }
        expect(ix.sizeBytes).toBe([...model.values()].reduce((a, b) => a + b, 0));
        expect(ix.slices).toBe(model.size);
        expect(ix.objectCount).toBe(new Set([...model.keys()].map((k) => k.split(':')[0])).size);
      }),
    );
  });

  it('evicts only above the high watermark, down to the low one minus what is coming', () => {
    expect(evictionTarget(90, 5, 100, 0.95, 0.8)).toBeUndefined();
    expect(evictionTarget(90, 6, 100, 0.95, 0.8)).toBe(74);
    expect(evictionTarget(10, 200, 100, 0.95, 0.8)).toBe(0);
  });
});
