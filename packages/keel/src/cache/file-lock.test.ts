import { spawnSync } from 'node:child_process';
import { lutimes, mkdir, mkdtemp, readlink, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileLocks, LOCK_HOST, LOCKS_DIR } from './file-lock.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-file-lock-'));
  await mkdir(path.join(dir, LOCKS_DIR));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The pid of a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
    encoding: 'utf8',
  });
  return Number(child.stdout);
}

/** Plants a lock file for `key` naming `owner`, `ageMs` old. */
async function plant(key: string, owner: string, ageMs = 0): Promise<void> {
  const file = path.join(dir, LOCKS_DIR, key);
  await symlink(owner, file);
  const when = new Date(Date.now() - ageMs);
  await lutimes(file, when, when);
}

describe('FileLocks', () => {
  it('names its host in the lock file it holds', async () => {
    const locks = new FileLocks(dir);
    const target = await locks.run('k', () => readlink(path.join(dir, LOCKS_DIR, 'k')));
    expect(target).toMatch(new RegExp(`^${process.pid}-[0-9a-f]+@${LOCK_HOST.replace(/\./g, '\\.')}$`));
  });

  it("breaks at once a lock of this host's whose process is gone, in both owner formats", async () => {
    const locks = new FileLocks(dir);
    await plant('a', `${deadPid()}-abcdef@${LOCK_HOST}`);
    await plant('b', `${deadPid()}-abcdef`);
    expect(await locks.tryRun('a', () => Promise.resolve(1))).toEqual({ ran: true, value: 1 });
    expect(await locks.tryRun('b', () => Promise.resolve(2))).toEqual({ ran: true, value: 2 });
  });

  it("leaves another host's lock alone while it is younger than staleMs, whatever its pid, and breaks it after", async () => {
    const locks = new FileLocks(dir, 30_000);
    // A pid that does not run here says nothing of a process on another host.
    await plant('c', `${deadPid()}-abcdef@another-host.example`);
    expect(await locks.tryRun('c', () => Promise.resolve('taken'))).toEqual({ ran: false });
    await rm(path.join(dir, LOCKS_DIR, 'c'));
    await plant('c', `${deadPid()}-abcdef@another-host.example`, 31_000);
    expect(await locks.tryRun('c', () => Promise.resolve('taken'))).toEqual({ ran: true, value: 'taken' });
  });

  it('keeps a lock of a live process on this host until staleMs', async () => {
    const locks = new FileLocks(dir, 30_000);
    // The parent of this process runs, on this host.
    await plant('d', `${process.ppid}-abcdef@${LOCK_HOST}`);
    expect(await locks.tryRun('d', () => Promise.resolve(0))).toEqual({ ran: false });
  });
});
