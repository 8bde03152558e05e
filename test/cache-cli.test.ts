import { spawnSync } from 'node:child_process';
import { access, readFile, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { filledCache, objectDirOf, sliceFileOf, useTempDir } from './cache-support.js';

const tmp = useTempDir();

function keel(...args: string[]): {
  status: number | null;
  json: Record<string, unknown>;
  stdout: string;
  stderr: string;
} {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'packages/gateway/src/cli/main.ts', ...args], {
    encoding: 'utf8',
  });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    // not JSON
  }
  return { status: r.status, json, stdout: r.stdout, stderr: r.stderr };
}

describe('keel cache', () => {
  it('verify reports a flipped byte without changing anything, --fix repairs it; stats and cleanup print counts', async () => {
    const id = { bucket: 'b', key: 'k' };
    const { cache } = await filledCache(tmp().dir, id, 3000);
    await cache.close();
    const slice = sliceFileOf(tmp().dir, id, 1);
    const bytes = await readFile(slice);
    bytes[3] = (bytes[3] ?? 0) ^ 0xff;
    await writeFile(slice, bytes);

    const stats = keel('cache', 'stats', '--dir', tmp().dir, '--slice-bytes', '1024', '--json');
    expect(stats.status).toBe(0);
    expect(stats.json).toMatchObject({ objects: 1, slices: 3, sizeBytes: 3000 });

    const check = keel('cache', 'verify', '--dir', tmp().dir, '--slice-bytes', '1024', '--json');
    expect(check.status).toBe(3);
    expect(check.json).toMatchObject({ slicesChecked: 3, checksumFailures: 1, fixed: false });
    expect((await readFile(slice)).equals(bytes)).toBe(true);

    const fix = keel('cache', 'verify', '--dir', tmp().dir, '--slice-bytes', '1024', '--json', '--fix');
    expect(fix.status).toBe(0);
    expect(fix.json).toMatchObject({ checksumFailures: 1, fixed: true });
    const again = keel('cache', 'verify', '--dir', tmp().dir, '--slice-bytes', '1024', '--json');
    expect(again.json).toMatchObject({ slicesChecked: 2, checksumFailures: 0 });

    const cleanup = keel('cache', 'cleanup', '--dir', tmp().dir, '--json');
    expect(cleanup.status).toBe(0);
    expect(cleanup.json).toMatchObject({ objectsScanned: 1, orphanedFiles: 0 });
  });

  it('cleanup counts the .tmp and orphaned files it removes, in text and in --json, and leaves young ones alone', async () => {
    const id = { bucket: 'b', key: 'k' };
    const { cache } = await filledCache(tmp().dir, id, 3000);
    await cache.close();
    const objectDir = objectDirOf(tmp().dir, id);
    const exists = (file: string): Promise<boolean> =>
      access(file).then(
        () => true,
        () => false,
      );
    /** A leftover write and an unreferenced slice, both from an hour ago, and a write still going on. */
    const plant = async (): Promise<{ old: string[]; young: string }> => {
      const old = [path.join(objectDir, 'slice-1.tmp-crashed'), path.join(objectDir, 'slice-7')];
      for (const file of old) {
        await writeFile(file, 'leftover');
        const anHourAgo = new Date(Date.now() - 3600_000);
        await utimes(file, anHourAgo, anHourAgo);
      }
      const young = path.join(objectDir, 'slice-2.tmp-writing');
      await writeFile(young, 'in progress');
      return { old, young };
    };

    const text = await plant();
    const r = keel('cache', 'cleanup', '--dir', tmp().dir);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('partial writes removed: 1');
    expect(r.stdout).toContain('orphaned files removed: 1');
    for (const f of text.old) expect(await exists(f)).toBe(false);
    expect(await exists(text.young)).toBe(true);

    const json = await plant();
    const cleanup = keel('cache', 'cleanup', '--dir', tmp().dir, '--json');
    expect(cleanup.status).toBe(0);
    expect(cleanup.json).toMatchObject({ objectsScanned: 1, partialWrites: 1, orphanedFiles: 1 });
    for (const f of json.old) expect(await exists(f)).toBe(false);
    expect(await exists(json.young)).toBe(true);
  });

  it('names the bad setting', () => {
    const r = keel('cache', 'stats', '--dir', path.join(tmp().dir, 'nope'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no such cache directory');
    expect(keel('cache', 'stats', '--dir', tmp().dir, '--slice-bytes', 'x').stderr).toContain(
      '--slice-bytes',
    );
  });
});
