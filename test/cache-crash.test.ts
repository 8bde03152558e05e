import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RangeCache, sliceLength } from 'keel/cache';
import { bytesOf, tempDir } from './cache-support.js';
import { CRASH_SIZE, CRASH_SLICE, expectedSlice } from './fixtures/cache-content.js';

async function runAndKill(dir: string, afterMs: number): Promise<void> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/cache-writer.ts'), dir],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`writer exited early with ${code}`)));
  });
  await new Promise((r) => setTimeout(r, afterMs));
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** Reopens the cache, reads every slice of every object: right bytes or a miss. Returns hits. */
async function checkEveryRead(dir: string): Promise<number> {
  let hits = 0;
  const cache = await RangeCache.open({ dir, sliceBytes: CRASH_SLICE });
  for (let o = 0; o < 6; o++) {
    const key = `obj-${o}`;
    for (let i = 0; i * CRASH_SLICE < CRASH_SIZE; i++) {
      const len = sliceLength(CRASH_SIZE, CRASH_SLICE, i);
      const r = await cache.read({ bucket: 'crash', key }, i * CRASH_SLICE, i * CRASH_SLICE + len - 1);
      if (!r.hit) continue;
      hits++;
      expect((await bytesOf(r.stream)).equals(expectedSlice(key, i, len))).toBe(true);
    }
  }
  await cache.close();
  // No temporary file survives a restart.
  for (const shard of await readdir(path.join(dir, 'objects'))) {
    for (const obj of await readdir(path.join(dir, 'objects', shard))) {
      const names = await readdir(path.join(dir, 'objects', shard, obj)).catch(() => []);
      expect(names.filter((n) => n.includes('.tmp-'))).toEqual([]);
    }
  }
  return hits;
}

describe('range cache crash safety', () => {
  it('after SIGKILL at random moments, every read returns the right bytes or a miss', async () => {
    // Two caches killed side by side per round: the same number of kills in half the time.
    const dirs = [await tempDir(), await tempDir()];
    try {
      let hits = 0;
      for (let round = 0; round < 6; round++) {
        await Promise.all(dirs.map((d) => runAndKill(d.dir, 20 + Math.floor(Math.random() * 200))));
        for (const { dir } of dirs) hits += await checkEveryRead(dir);
      }
      expect(hits).toBeGreaterThan(0); // the writers really wrote between kills
    } finally {
      for (const d of dirs) await d.remove();
    }
  }, 60_000);
});
