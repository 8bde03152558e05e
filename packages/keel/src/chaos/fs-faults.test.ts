import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { classify } from '../errors/index.js';
import * as nodeFs from 'node:fs/promises';
import { faultyFs, type FsLike } from './index.js';

// The example from docs/chaos.md ("FsLike: how a module accepts an injected file system").
interface StoreOptions {
  dir: string;
  fs?: Pick<FsLike, 'open' | 'rename' | 'readFile' | 'mkdir'>;
}

async function saveState(options: StoreOptions, json: string): Promise<void> {
  const fs = options.fs ?? nodeFs;
  const tmp = `${options.dir}/state.json.tmp`;
  const handle = await fs.open(tmp, 'w');
  try {
    await handle.writeFile(json);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, `${options.dir}/state.json`);
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-fsfault-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('faultyFs', () => {
  it('stalls matching calls by the given time and leaves the others alone, until the stall is removed', async () => {
    const fs = faultyFs();
    const stop = fs.stall({ ms: 200, ops: ['sync'] });
    const handle = await fs.open(path.join(dir, 'f'), 'w');
    let t = performance.now();
    await handle.writeFile('x');
    const writeMs = performance.now() - t;
    t = performance.now();
    await handle.sync();
    expect(performance.now() - t).toBeGreaterThanOrEqual(190);
    stop();
    t = performance.now();
    await handle.sync();
    const after = performance.now() - t;
    await handle.close();
    // Not stalled: well under the stall (a loaded machine may still take a while).
    expect(Math.max(writeMs, after)).toBeLessThan(190);
    expect(() => fs.stall({ ms: -1 })).toThrow(/ms must be/);
  });

  it('fails the Nth matching call with a real-looking errno error, and only that one', async () => {
    const fs = faultyFs({ faults: [{ code: 'EIO', ops: ['writeFile'], nth: 2 }] });
    await fs.writeFile(path.join(dir, 'a'), 'one');
    const err = await fs.writeFile(path.join(dir, 'b'), 'two').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EIO', errno: -5, syscall: 'writeFile', path: path.join(dir, 'b') });
    expect(classify(err).code).toBe('IO_ERROR');
    await fs.writeFile(path.join(dir, 'c'), 'three');
    expect((await readdir(dir)).sort()).toEqual(['a', 'c']);
    expect(fs.counts.failed).toBe(1);
    expect(fs.counts.calls.writeFile).toBe(3);
  });

  it('fails by path pattern and leaves other paths alone', async () => {
    const fs = faultyFs({ faults: [{ code: 'EACCES', path: /\.meta$/ }] });
    await expect(fs.writeFile(path.join(dir, 'x.meta'), '{}')).rejects.toMatchObject({ code: 'EACCES' });
    await fs.writeFile(path.join(dir, 'x.slice'), 'ok');
    expect(await readFile(path.join(dir, 'x.slice'), 'utf8')).toBe('ok');
  });

  it('fails with a probability from the injected random source', async () => {
    const values = [0.9, 0.1, 0.9, 0.1];
    const fs = faultyFs({ faults: [{ code: 'EROFS', probability: 0.5 }], random: () => values.shift() ?? 1 });
    const results = await Promise.allSettled(
      [1, 2, 3, 4].map((i) => fs.writeFile(path.join(dir, `f${i}`), 'x')),
    );
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected']);
  });

  it('fails FileHandle writes and fsyncs, and can be injected and cleared while running', async () => {
    const fs = faultyFs();
    const remove = fs.inject({ code: 'ENOSPC', ops: ['sync'], times: 1 });
    const handle = await fs.open(path.join(dir, 'h'), 'w');
    await handle.write(Buffer.from('data'));
    await expect(handle.sync()).rejects.toMatchObject({ code: 'ENOSPC', syscall: 'sync' });
    await handle.sync(); // `times: 1` spent
    remove();
    fs.inject({ code: 'EDQUOT', ops: ['write'] });
    await expect(handle.write(Buffer.from('more'))).rejects.toMatchObject({ code: 'EDQUOT' });
    fs.clear();
    await handle.write(Buffer.from('!'));
    await handle.close();
    expect(await readFile(path.join(dir, 'h'), 'utf8')).toBe('data!');
  });

  it('simulates a full disk from a byte budget: no partial writes, unlink gives space back, statfs reports it', async () => {
    const fs = faultyFs({ diskBytes: 10 });
    await fs.writeFile(path.join(dir, 'a'), '123456');
    await expect(fs.writeFile(path.join(dir, 'b'), '12345')).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await readdir(dir)).toEqual(['a']);
    expect(fs.freeBytes()).toBe(4);
    await fs.unlink(path.join(dir, 'a'));
    expect(fs.freeBytes()).toBe(10);
    await fs.writeFile(path.join(dir, 'b'), '12345');
    fs.setFreeBytes(4096 * 3);
    const stats = await fs.statfs(dir);
    expect(stats.bavail * stats.bsize).toBe(4096 * 3);
  });

  it('accounts replaced and removed files on the simulated disk, so rewrite-and-rename does not leak space', async () => {
    const fs = faultyFs({ diskBytes: 100 });
    const meta = path.join(dir, 'meta.json');
    for (let i = 0; i < 20; i++) {
      await fs.writeFile(`${meta}.tmp`, 'x'.repeat(40)); // 20 rewrites of 40 bytes on a 100-byte disk
      await fs.rename(`${meta}.tmp`, meta);
    }
    expect(fs.freeBytes()).toBe(60);
    await fs.writeFile(meta, 'short'); // overwriting in place gives back the difference
    expect(fs.freeBytes()).toBe(95);
    const handle = await fs.open(meta, 'w'); // truncation frees the old contents
    expect(fs.freeBytes()).toBe(100);
    await handle.write(Buffer.alloc(30));
    await handle.close();
    await fs.mkdir(path.join(dir, 'sub', 'deep'), { recursive: true });
    await fs.writeFile(path.join(dir, 'sub', 'deep', 'f'), 'y'.repeat(50));
    expect(fs.freeBytes()).toBe(20);
    await fs.rm(path.join(dir, 'sub'), { recursive: true });
    expect(fs.freeBytes()).toBe(70);
    await expect(fs.writeFile(path.join(dir, 'big'), 'z'.repeat(71))).rejects.toMatchObject({
      code: 'ENOSPC',
    });
  });

  it("reaches code written against FsLike (the guide's example): a failed fsync keeps the old state", async () => {
    await saveState({ dir }, '{"v":1}'); // the real node:fs/promises is an FsLike
    const fs = faultyFs({ faults: [{ code: 'EIO', ops: ['sync'], times: 1 }] });
    await expect(saveState({ dir, fs }, '{"v":2}')).rejects.toMatchObject({ code: 'EIO', syscall: 'sync' });
    expect(await readFile(path.join(dir, 'state.json'), 'utf8')).toBe('{"v":1}');
    await saveState({ dir, fs }, '{"v":2}');
    expect(await readFile(path.join(dir, 'state.json'), 'utf8')).toBe('{"v":2}');
    expect(fs.counts.calls).toMatchObject({ open: 2, write: 2, sync: 2, close: 2, rename: 1 });
  });
});
