import { createRequire } from 'node:module';
import { crc32 as zlibCrc32 } from 'node:zlib';

/** CRC-32 of `data`, continuing from `initial` (the CRC of what came before). */
export type Crc32 = (data: Uint8Array, initial?: number) => number;

/** CRC-32 of the ASCII digits 1–9: the standard check value of CRC-32/ISO-HDLC. */
const CHECK_VALUE = 0xcbf43926;

/**
 * @node-rs/crc32 (SIMD; the same CRC-32 as zlib's, faster: see the CRC-32 row of docs/cache.md)
 * when its native build loads and computes the check value on this machine.
 */
function loadFast(): { path: string; crc32: Crc32 } | undefined {
  try {
    const require = createRequire(import.meta.url);
    const path = require.resolve('@node-rs/crc32');
    const { crc32 } = require(path) as { crc32?: Crc32 };
    return crc32?.(Buffer.from('123456789')) === CHECK_VALUE ? { path, crc32 } : undefined;
  } catch {
    return undefined;
  }
}

const fast = loadFast();

/** Where the fast CRC-32 was loaded from (verifying threads load it too); undefined without it. */
export const fastCrc32Module: string | undefined = fast?.path;

/**
 * CRC-32 (ISO-HDLC, the one zlib computes) of every slice the cache writes and serves: the fast
 * build when it loaded, node:zlib's otherwise (same values, slower). Every byte served is checked
 * with it, so its speed is a share of every cache hit.
 */
export const crc32: Crc32 = fast?.crc32 ?? zlibCrc32;
