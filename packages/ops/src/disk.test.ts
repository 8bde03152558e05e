import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DiskMonitor, type StatfsResult } from './disk-monitor.js';
import { cleanupDisk, CLEANUP_PRESETS } from './disk-cleanup.js';
import { HealthRegistry } from './health.js';
import { AlertManager } from './alerts/manager.js';
import type { Alert } from './alerts/types.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'keel-ops-disk-'));
  dirs.push(d);
  return d;
}

/** A file system of 1000 blocks of 1 KiB, none reserved, whose free space is `free()` blocks. */
function fakeFs(free: () => number, inodesFree = 1000): (p: string) => Promise<StatfsResult> {
  return () =>
    Promise.resolve({
      bsize: 1024,
      blocks: 1000,
      bfree: free(),
      bavail: free(),
      files: 1000,
      ffree: inodesFree,
    });
}

describe('DiskMonitor', () => {
  it.each([
    [300, 1000, 'ok'],
    [200, 1000, 'warning'],
    [150, 1000, 'warning'],
    [100, 1000, 'critical'],
    [500, 50, 'critical'],
    [500, 150, 'warning'],
  ] as const)('free %i blocks, %i inodes → %s', async (free, inodes, level) => {
    const m = new DiskMonitor({ paths: ['/data'], statfs: fakeFs(() => free, inodes) });
    const [usage] = await m.check();
    expect(usage?.level).toBe(level);
  });

  it('raises an alert when crossing a threshold and resolves it when back under', async () => {
    let free = 500;
    const sent: Alert[] = [];
    const alerts = new AlertManager({
      handlers: [
        {
          name: 'mem',
          send: (a) => {
            sent.push(...a);
          },
        },
      ],
    });
    const levels: string[] = [];
    const m = new DiskMonitor({
      paths: ['/data'],
      statfs: fakeFs(() => free),
      alerts,
      onLevel: (u) => levels.push(u.level),
    });
    await m.check();
    free = 150;
    await m.check();
    await m.check();
    free = 50;
    await m.check();
    free = 500;
    await m.check();
    await alerts.flush();
    expect(sent.map((a) => `${a.severity}:${a.status}`)).toEqual([
      'warning:firing',
      'warning:resolved',
      'critical:firing',
      'critical:resolved',
    ]);
    expect(levels).toEqual(['warning', 'critical']);
  });

  it('answers a disk:utilization health check', async () => {
    let free = 500;
    const health = new HealthRegistry();
    health.markStarted();
    new DiskMonitor({ paths: ['/a'], statfs: fakeFs(() => free) }).healthCheck(health);
    expect((await health.report()).status).toBe('pass');
    free = 50;
    const report = await health.report();
    expect(report.status).toBe('warn');
    expect(report.checks['disk:utilization']?.[0]).toMatchObject({
      status: 'fail',
      observedValue: 95,
      observedUnit: 'percent',
    });
  });

  it.each([
    // blocks, bfree, bavail: used = blocks − bfree; root's reserve = bfree − bavail.
    ['a 5 % reserve', 1000, 300, 250],
    ['a reserve larger than what is used (the 27 % that read as 70 %)', 1000, 889, 300],
    ['a reserve that made 25 % used read as critical', 1000, 850, 50],
  ] as const)(
    'counts used space as df does with %s: used / (used + available), the reserve neither',
    async (_case, blocks, bfree, bavail) => {
      const statfs = (): Promise<StatfsResult> =>
        Promise.resolve({ bsize: 4096, blocks, bfree, bavail, files: 100, ffree: 100 });
      const [u] = await new DiskMonitor({ paths: ['/data'], statfs }).check();
      const used = blocks - bfree;
      expect(u?.usedRatio).toBeCloseTo(used / (used + bavail), 12);
      expect(u).toMatchObject({
        usedBytes: used * 4096,
        freeBytes: bavail * 4096,
        totalBytes: blocks * 4096,
      });
      const ratio = used / (used + bavail);
      expect(u?.level).toBe(ratio >= 0.9 ? 'critical' : ratio >= 0.8 ? 'warning' : 'ok');
    },
  );

  it("reads a real file system with fs.statfs and agrees with df's Use%", async () => {
    const dir = await tempDir();
    const [u] = await new DiskMonitor({ paths: [dir] }).check();
    expect(u?.totalBytes).toBeGreaterThan(0);
    // df -P: "Filesystem 1024-blocks Used Available Capacity Mounted on"; Capacity rounds up.
    const df = spawnSync('df', ['-P', dir], { encoding: 'utf8' });
    if (df.status !== 0) {
      console.warn(`SKIPPED the df comparison: df -P failed (${df.stderr})`);
      return;
    }
    const [, , used, available] = (df.stdout.trim().split('\n')[1] ?? '').split(/\s+/).map(Number);
    const dfRatio = (used ?? 0) / ((used ?? 0) + (available ?? 0));
    // Other processes write meanwhile: the two readings may differ by a little.
    expect(Math.abs((u?.usedRatio ?? -1) - dfRatio)).toBeLessThan(0.01);
  });

  it('rejects thresholds out of range, naming the setting', () => {
    expect(() => new DiskMonitor({ paths: ['/'], warningRatio: 1.5 })).toThrow(/disk\.warningRatio/);
    expect(() => new DiskMonitor({ paths: ['/'], warningRatio: 0.95 })).toThrow(
      /disk\.warningRatio: must be below/,
    );
    expect(() => new DiskMonitor({ paths: [] })).toThrow(/disk\.paths/);
  });
});

describe('cleanupDisk', () => {
  async function populate(dir: string, now: number): Promise<void> {
    await mkdir(join(dir, 'sub'));
    // ten 10 KiB log files, aged 1..10 days; plus a fresh one and a non-matching one
    for (let i = 1; i <= 10; i++) {
      const p = join(dir, i % 2 ? `app-${String(i)}.log` : join('sub', `app-${String(i)}.log`));
      await writeFile(p, Buffer.alloc(10 * 1024));
      const t = (now - i * 86_400_000 - 1000) / 1000;
      await utimes(p, t, t);
    }
    await writeFile(join(dir, 'fresh.log'), Buffer.alloc(10 * 1024));
    await writeFile(join(dir, 'keep.dat'), Buffer.alloc(10 * 1024));
    const old = (now - 30 * 86_400_000) / 1000;
    await utimes(join(dir, 'keep.dat'), old, old);
  }

  it('removes matching files older than the age, oldest first, until the target free share', async () => {
    const dir = await tempDir();
    const now = Date.now();
    await populate(dir, now);
    let freeBlocks = 150; // 15% free of 1000 KiB: 50 KiB to free for 20%
    const statfs = (): Promise<StatfsResult> =>
      Promise.resolve({
        bsize: 1024,
        blocks: 1000,
        bfree: freeBlocks,
        bavail: freeBlocks,
        files: 1,
        ffree: 1,
      });
    const report = await cleanupDisk({
      rules: [{ dir, pattern: /\.log$/, olderThanMs: 2 * 86_400_000 }],
      statfs,
      now: () => now,
    });
    freeBlocks += report.freedBytes / 1024;
    expect(report.removed.map((r) => r.path.slice(dir.length + 1))).toEqual([
      'sub/app-10.log',
      'app-9.log',
      'sub/app-8.log',
      'app-7.log',
      'sub/app-6.log',
    ]);
    expect(report.freedBytes).toBe(50 * 1024);
    expect(report.reachedTarget).toBe(true);
    expect((await readdir(dir)).sort()).toEqual([
      'app-1.log',
      'app-3.log',
      'app-5.log',
      'fresh.log',
      'keep.dat',
      'sub',
    ]);
    expect((await readdir(join(dir, 'sub'))).sort()).toEqual(['app-2.log', 'app-4.log']);
  });

  it('keeps log files younger than 7 days with the logs preset', async () => {
    const dir = await tempDir();
    const now = Date.now();
    await populate(dir, now);
    const report = await cleanupDisk({
      rules: [CLEANUP_PRESETS.logs(dir)],
      targetFreeRatio: 1,
      now: () => now,
    });
    expect(report.removed.map((r) => r.path.slice(dir.length + 1)).sort()).toEqual([
      'app-7.log',
      'app-9.log',
      'sub/app-10.log',
      'sub/app-8.log',
    ]);
  });

  it('counts the free share as df does: a reserve for root is not free space to reach', async () => {
    const dir = await tempDir();
    const now = Date.now();
    await populate(dir, now);
    // 1000 blocks of 1 KiB, 300 used, 100 reserved for root, 600 free to users: 67 % free as df
    // counts it (600 / 900), so a 20 % target needs nothing removed; 60 % of all blocks would.
    const statfs = (): Promise<StatfsResult> =>
      Promise.resolve({ bsize: 1024, blocks: 1000, bfree: 700, bavail: 600, files: 1, ffree: 1 });
    const asked: number[] = [];
    const report = await cleanupDisk({
      rules: [{ dir, pattern: '**/*.log' }],
      statfs,
      targetFreeRatio: 0.7,
      evict: (bytes) => {
        asked.push(bytes);
        return Promise.resolve(0);
      },
      dryRun: false,
      now: () => now,
    });
    // 70 % of the 900 KiB users can have is 630 KiB: 30 KiB to free.
    expect(asked).toEqual([30 * 1024]);
    expect(report.freedBytes).toBe(30 * 1024);
    expect(report.reachedTarget).toBe(true);
  });

  it('asks the eviction hook first and deletes nothing when it frees enough', async () => {
    const dir = await tempDir();
    const now = Date.now();
    await populate(dir, now);
    let freeBlocks = 150;
    const statfs = (): Promise<StatfsResult> =>
      Promise.resolve({
        bsize: 1024,
        blocks: 1000,
        bfree: freeBlocks,
        bavail: freeBlocks,
        files: 1,
        ffree: 1,
      });
    const asked: number[] = [];
    const report = await cleanupDisk({
      rules: [{ dir, pattern: '**/*.log' }],
      statfs,
      evict: (bytes) => {
        asked.push(bytes);
        freeBlocks += bytes / 1024;
        return Promise.resolve(bytes);
      },
    });
    expect(asked).toEqual([50 * 1024]);
    expect(report.removed).toEqual([]);
    expect(report.evictedBytes).toBe(50 * 1024);
    expect(report.reachedTarget).toBe(true);
  });

  it('never follows symlinks out of the directory', async () => {
    const dir = await tempDir();
    const outside = await tempDir();
    await writeFile(join(outside, 'precious.log'), 'x');
    await symlink(outside, join(dir, 'link-dir'));
    await symlink(join(outside, 'precious.log'), join(dir, 'link.log'));
    await writeFile(join(dir, 'old.log'), 'y');
    const report = await cleanupDisk({ rules: [{ dir, pattern: /\.log$/ }], targetFreeRatio: 1 });
    expect(report.removed.map((r) => r.path)).toEqual([join(dir, 'old.log')]);
    expect(await readdir(outside)).toEqual(['precious.log']);
    expect((await readdir(dir)).sort()).toEqual(['link-dir', 'link.log']);
  });

  it('lists without removing in a dry run, and validates options', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'a.tmp'), 'x');
    const report = await cleanupDisk({
      rules: [{ dir, pattern: '*.tmp' }],
      targetFreeRatio: 1,
      dryRun: true,
    });
    expect(report.removed.length).toBe(1);
    expect(await readdir(dir)).toEqual(['a.tmp']);
    await expect(cleanupDisk({ rules: [{ dir }], targetFreeRatio: 0 })).rejects.toThrow(
      /cleanup\.targetFreeRatio/,
    );
  });
});
