import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RangeCache, sliceLength } from '../src/cache/index.js';
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

describe('range cache crash safety', () => {
  it('after SIGKILL at random moments, every read returns the right bytes or a miss', async () => {
    const tmp = await tempDir();
    try {
      let hits = 0;
      for (let round = 0; round < 10; round++) {
        await runAndKill(tmp.dir, 20 + Math.floor(Math.random() * 200));
        const cache = await RangeCache.open({ dir: tmp.dir, sliceBytes: CRASH_SLICE });
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
        const shards = await readdir(path.join(tmp.dir, 'objects'));
        for (const shard of shards) {
          for (const obj of await readdir(path.join(tmp.dir, 'objects', shard))) {
            const names = await readdir(path.join(tmp.dir, 'objects', shard, obj)).catch(() => []);
            expect(names.filter((n) => n.includes('.tmp-'))).toEqual([]);
          }
        }
      }
      expect(hits).toBeGreaterThan(0); // the writer really wrote between kills
    } finally {
      await tmp.remove();
    }
  }, 60_000);
});
