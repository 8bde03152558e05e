import { spawnSync } from 'node:child_process';
import { lutimes, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RangeCache } from 'keel/cache';
import { objectDirOf, tempDir } from './cache-support.js';
import { LOCK_HOST } from '../packages/keel/src/cache/file-lock.js';

/*
 * Hosts sharing one cache directory on a network volume: a host's cleanup leaves another host's
 * temporary files alone while they are young (whether their writer runs cannot be asked from
 * here), and removes this host's leftovers of processes that are gone at once.
 */

const removers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const r of removers.splice(0)) await r();
});

/** The pid of a process that has exited. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout);
}

describe('cache cleanup with hosts sharing the directory', () => {
  it("keeps another host's young temporary files, and removes old ones and this host's leftovers", async () => {
    const temp = await tempDir();
    removers.push(() => temp.remove());
    const id = { bucket: 'b', key: 'k' };
    const cache = await RangeCache.open({ dir: temp.dir, sliceBytes: 64 * 1024, cleanupGraceMs: 0 });
    try {
      await cache.putMeta(id, { etag: '"e"', size: 10, headers: {} });
      await cache.writeSlice(id, 0, Buffer.alloc(10, 1), '"e"');
      const dir = objectDirOf(temp.dir, id);
      const dead = deadPid();
      const names = {
        otherHostYoung: `slice-0.tmp-${dead}-aaaaaa@another-host.example`,
        otherHostOld: `slice-0.tmp-${dead}-bbbbbb@another-host.example`,
        thisHostGone: `slice-0.tmp-${dead}-cccccc@${LOCK_HOST}`,
        noHostGone: `slice-0.tmp-${dead}-dddddd`,
      };
      for (const n of Object.values(names)) await writeFile(path.join(dir, n), 'partial');
      const old = new Date(Date.now() - 11 * 60_000);
      await lutimes(path.join(dir, names.otherHostOld), old, old);
      const report = await cache.cleanup();
      expect(report.partialWrites).toBe(3);
      const left = await readdir(dir);
      expect(left.filter((n) => n.includes('.tmp-'))).toEqual([names.otherHostYoung]);
      // The object itself is untouched.
      const read = await cache.readBuffer(id, 0, 9);
      expect(read.hit).toBe(true);
      if (read.hit) read.release();
    } finally {
      await cache.close();
    }
  });
});
