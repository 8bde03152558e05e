import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { filledCache, sliceFileOf, useTempDir } from './cache-support.js';

const tmp = useTempDir();

function keel(...args: string[]): { status: number | null; json: Record<string, unknown>; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'packages/gateway/src/cli/main.ts', ...args], {
    encoding: 'utf8',
  });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    // not JSON
  }
  return { status: r.status, json, stderr: r.stderr };
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

  it('names the bad setting', () => {
    const r = keel('cache', 'stats', '--dir', path.join(tmp().dir, 'nope'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no such cache directory');
    expect(keel('cache', 'stats', '--dir', tmp().dir, '--slice-bytes', 'x').stderr).toContain(
      '--slice-bytes',
    );
  });
});
