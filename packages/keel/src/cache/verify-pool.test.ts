import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VerifyPool, type VerifyRequest } from './verify-pool.js';

const BLOCK = 64 * 1024;
let dir: string;
let data: Buffer;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-verify-pool-'));
  data = randomBytes(10 * BLOCK + 100);
  file = path.join(dir, 'slice-0');
  await writeFile(file, data);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const request = (from: number, to: number, crcs?: number[]): VerifyRequest => {
  const sums: number[] = [];
  for (let at = from; at < to; at += BLOCK) sums.push(crc32(data.subarray(at, Math.min(to, at + BLOCK))));
  return {
    path: file,
    position: from,
    length: to - from,
    atEnd: to === data.length,
    blockBytes: BLOCK,
    crcs: Uint32Array.from(crcs ?? sums),
  };
};

describe('verifying threads', () => {
  it('answer verified bytes, a checksum failure, a wrong length and a missing file as such', async () => {
    const pool = new VerifyPool(2);
    const ok = await pool.verify(request(BLOCK, 4 * BLOCK));
    expect(ok.ok && ok.bytes.equals(data.subarray(BLOCK, 4 * BLOCK))).toBe(true);
    const end = await pool.verify(request(8 * BLOCK, data.length));
    expect(end.ok && end.bytes.equals(data.subarray(8 * BLOCK))).toBe(true);
    const bad = await pool.verify(request(0, 2 * BLOCK, [crc32(data.subarray(0, BLOCK)), 12345]));
    expect(bad).toMatchObject({ ok: false, kind: 'checksum' });
    await writeFile(file, Buffer.concat([data, Buffer.from([0])]));
    expect(await pool.verify(request(8 * BLOCK, data.length))).toMatchObject({
      ok: false,
      kind: 'wrong-length',
    });
    expect(await pool.verify({ ...request(0, BLOCK), path: path.join(dir, 'gone') })).toMatchObject({
      ok: false,
      kind: 'error',
      error: { code: 'ENOENT' },
    });
    await pool.close();
  });

  it('report whether meta.json still has the stamp it was read with', async () => {
    const pool = new VerifyPool(1);
    const meta = path.join(dir, 'meta.json');
    await writeFile(meta, '{}');
    const { statSync } = await import('node:fs');
    const st = statSync(meta);
    const stamp = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
    const same = await pool.verify({ ...request(0, BLOCK), meta: { path: meta, stamp } });
    expect(same).toMatchObject({ ok: true, metaChanged: false });
    await writeFile(meta, '{"changed":true}');
    const changed = await pool.verify({ ...request(0, BLOCK), meta: { path: meta, stamp } });
    expect(changed).toMatchObject({ ok: true, metaChanged: true });
    await pool.close();
  });

  it('a thread that dies fails its reads as I/O errors and is replaced; close fails what is left', async () => {
    const pool = new VerifyPool(1);
    expect((await pool.verify(request(0, BLOCK))).ok).toBe(true);
    const workers = (pool as unknown as { workers: { worker: { terminate(): Promise<number> } }[] }).workers;
    // A long read (64 MiB read and checked) that the thread is still busy with when it dies.
    const big = path.join(dir, 'big');
    await writeFile(big, Buffer.alloc(1024 * BLOCK, 7));
    const sum = crc32(Buffer.alloc(BLOCK, 7));
    const pending = pool.verify({
      path: big,
      position: 0,
      length: 1024 * BLOCK,
      atEnd: true,
      blockBytes: BLOCK,
      crcs: new Uint32Array(1024).fill(sum),
    });
    await workers[0]?.worker.terminate();
    expect(await pending).toMatchObject({ ok: false, kind: 'error', error: { code: 'EIO' } });
    const again = await pool.verify(request(0, BLOCK));
    expect(again.ok && again.bytes.equals(data.subarray(0, BLOCK))).toBe(true);
    await pool.close();
    expect(await pool.verify(request(0, BLOCK))).toMatchObject({ ok: false, kind: 'error' });
  });
});
