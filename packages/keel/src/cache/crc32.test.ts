import { randomBytes } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32, fastCrc32Module } from './crc32.js';

describe('crc32', () => {
  it('uses the SIMD build on this machine', () => {
    expect(fastCrc32Module).toMatch(/@node-rs[/\\]crc32/);
    expect(crc32).not.toBe(zlibCrc32);
  });

  it('computes what zlib computes, whole and continued from a previous CRC', () => {
    const data = randomBytes(3 * 65536 + 17);
    expect(crc32(data)).toBe(zlibCrc32(data));
    expect(crc32(Buffer.alloc(0))).toBe(0);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), fc.uint8Array({ maxLength: 4096 }), (a, b) => {
        const whole = Buffer.concat([a, b]);
        expect(crc32(whole)).toBe(zlibCrc32(whole));
        expect(crc32(b, crc32(a))).toBe(zlibCrc32(whole));
      }),
    );
  });
});
