import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stat } from 'node:fs/promises';
import { identityHash, RangeCache, sliceLength, type CacheLocks } from 'keel/cache';
import { tempDir } from './cache-support.js';
import { expectedSlice } from './fixtures/cache-content.js';
import {
  MP_ETAG,
  MP_OBJECTS,
  MP_SIZE,
  MP_SLICE,
  type WriterReport,
} from './fixtures/cache-multiprocess-writer.js';

/**
 * Seconds each writer runs: short in the suite; the 30 s run with
 * KEEL_MULTIPROCESS_SECONDS=30.
 */
const SECONDS = Number(process.env.KEEL_MULTIPROCESS_SECONDS ?? 4);
const WRITERS = 3;

function runWriter(dir: string, ms: number, extra: string[] = []): Promise<WriterReport> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(import.meta.dirname, 'fixtures/cache-multiprocess-writer.ts'),
      dir,
      String(ms),
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !last.startsWith('{')) reject(new Error(`writer exited with ${code}: ${out}`));
      else resolve(JSON.parse(last) as WriterReport);
    });
  });
}

describe('range cache shared by several processes', () => {
  it(
    `${WRITERS} processes filling random ranges of the same objects for ${SECONDS} s lose no slice, and verify finds nothing to fix`,
    async () => {
      const temp = await tempDir();
      const dir = temp.dir;
      try {
        const reports = await Promise.all(
          Array.from({ length: WRITERS }, () => runWriter(dir, SECONDS * 1000)),
        );
        const stored = new Set(reports.flatMap((r) => r.stored));
        expect(stored.size).toBeGreaterThan(20); // they really wrote, and raced on the same objects
        for (const r of reports) expect(r.wrongReads).toBe(0);
        expect(reports.reduce((n, r) => n + r.reads, 0)).toBeGreaterThan(0);

        // `keel cache verify` (no --fix) reads every slice: nothing to repair.
        const verify = spawnSync(
          process.execPath,
          [
            '--import',
            'tsx',
            'packages/gateway/src/cli/main.ts',
            'cache',
            'verify',
            '--dir',
            dir,
            '--slice-bytes',
            String(MP_SLICE),
            '--json',
          ],
          { encoding: 'utf8' },
        );
        expect(verify.status, verify.stderr).toBe(0);
        expect(JSON.parse(verify.stdout)).toMatchObject({
          partialWrites: 0,
          orphanedFiles: 0,
          inconsistenciesFixed: 0,
          corruptMetadata: 0,
          checksumFailures: 0,
          missingSlices: 0,
          slicesChecked: stored.size,
        });

        // Every slice any process stored is listed and reads back right.
        const cache = await RangeCache.open({ dir, sliceBytes: MP_SLICE, cleanupOnOpen: false });
        try {
          for (const key of MP_OBJECTS) {
            const id = { bucket: 'mp', key };
            const meta = await cache.getMeta(id);
            const listed = new Set(meta?.slices.map((s) => s.index));
            expect(meta?.etag).toBe(MP_ETAG);
            for (const entry of stored) {
              const [k, i] = entry.split(':');
              if (k !== key) continue;
              const index = Number(i);
              expect(listed.has(index), `${entry} was stored but is not listed`).toBe(true);
              const len = sliceLength(MP_SIZE, MP_SLICE, index);
              const got = await cache.readBuffer(id, index * MP_SLICE, index * MP_SLICE + len - 1);
              expect(got.hit && got.bytes.equals(expectedSlice(key, index, len))).toBe(true);
              if (got.hit) got.release();
            }
          }
          expect(cache.stats().slices).toBe(stored.size);
        } finally {
          await cache.close();
        }
      } finally {
        await temp.remove();
      }
    },
    60_000 + SECONDS * 2_000,
  );

  it('processes filling objects of their own in a small cache keep it near its limit together, one evicting at a time', async () => {
    const temp = await tempDir();
    const dir = temp.dir;
    const maxBytes = 96 * MP_SLICE;
    try {
      const reports = await Promise.all(
        ['p', 'q'].map((prefix) => runWriter(dir, Math.min(SECONDS, 4) * 1000, [prefix, String(maxBytes)])),
      );
      const written = reports.reduce((n, r) => n + r.stored.length, 0);
      expect(written * MP_SLICE).toBeGreaterThan(2 * maxBytes); // far more than fits: eviction ran
      for (const r of reports) expect(r.wrongReads).toBe(0);
      const cache = await RangeCache.open({ dir, sliceBytes: MP_SLICE, maxBytes, cleanupOnOpen: false });
      try {
        const report = await cache.verify({ fix: false });
        expect(report).toMatchObject({
          orphanedFiles: 0,
          inconsistenciesFixed: 0,
          corruptMetadata: 0,
          checksumFailures: 0,
          missingSlices: 0,
        });
        // Each counts the other's slices at most rescanMs late: over the limit by at most what
        // was written meanwhile, never by the other process's whole share.
        expect(cache.stats().sizeBytes).toBeLessThanOrEqual(1.5 * maxBytes);
        expect(cache.stats().slices).toBeGreaterThan(0);
      } finally {
        await cache.close();
      }
    } finally {
      await temp.remove();
    }
  }, 60_000);

  it('takes its object and evictor locks from the CacheLocks it is given (the seam for hosts sharing a volume)', async () => {
    const temp = await tempDir();
    const taken: string[] = [];
    const locks: CacheLocks = {
      run: (key, fn) => {
        taken.push(`run:${key}`);
        return fn(); // one caller at a time in this test
      },
      tryRun: async (key, fn) => {
        taken.push(`try:${key}`);
        return { ran: true, value: await fn() };
      },
    };
    const cache = await RangeCache.open({
      dir: temp.dir,
      sliceBytes: MP_SLICE,
      maxBytes: 3 * MP_SLICE,
      locks,
    });
    try {
      const id = { bucket: 'mp', key: 'seam' };
      const other = { bucket: 'mp', key: 'seam-2' };
      const hash = identityHash(id);
      for (const [o, key] of [
        [id, 'seam'],
        [other, 'seam-2'],
      ] as const) {
        await cache.putMeta(o, { etag: MP_ETAG, size: MP_SIZE });
        for (const i of [0, 1])
          expect(await cache.writeSlice(o, i, expectedSlice(key, i, MP_SLICE), MP_ETAG)).toEqual({
            stored: true,
          });
      }
      expect(taken).toContain(`run:${hash}`);
      expect(taken).toContain('try:evictor'); // the second object's slices passed the limit
      expect(cache.stats().evictions).toBeGreaterThan(0);
      // No lock file was made: the given locks replaced them.
      await expect(stat(path.join(temp.dir, 'locks'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await cache.close();
      await temp.remove();
    }
  });
});
