/**
 * Range cache throughput against raw fs on the same disk, and verify/cleanup speed.
 * Writes bench/results/cache.json.
 */
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { encodeMeta, identityHash, META_VERSION, RangeCache, type CacheMeta } from 'keel/cache';
import { crc32 as cacheCrc32, fastCrc32Module } from '../packages/keel/src/cache/crc32.js';

const SLICE = 8 * 1024 * 1024;
const SLICES = Number(process.env.KEEL_BENCH_CACHE_SLICES ?? 24);
const ROUNDS = Number(process.env.KEEL_BENCH_CACHE_ROUNDS ?? 9);
const MANY_OBJECTS = Number(process.env.KEEL_BENCH_CACHE_OBJECTS ?? 10_000);
const SLICES_PER_OBJECT = 10;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};
const mbps = (bytes: number, ms: number): number => bytes / 1024 / 1024 / (ms / 1000);

async function drain(stream: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const c of stream) n += (c as Buffer).length;
  return n;
}

// Other work on the machine skews every figure: record the load so results can be judged.
const loadAtStart = os.loadavg();
const root = await mkdtemp(path.join(process.env.KEEL_BENCH_DIR ?? os.tmpdir(), 'keel-bench-cache-'));
try {
  const data = randomBytes(SLICE);
  const total = SLICE * SLICES;
  const id = { bucket: 'bench', key: 'big.bin' };

  // Writes: keel (tmp + fsync + rename + metadata) against raw writes with fsync of the same bytes.
  const rawDir = path.join(root, 'raw');
  await mkdir(rawDir);
  const writeKeel: number[] = [];
  const writeRaw: number[] = [];
  let cache: RangeCache | undefined;
  for (let r = 0; r < 3; r++) {
    await rm(path.join(root, 'cache'), { recursive: true, force: true });
    cache = await RangeCache.open({
      dir: path.join(root, 'cache'),
      sliceBytes: SLICE,
      maxBytes: 100 * total,
    });
    await cache.putMeta(id, { etag: '"b"', size: total });
    let t = performance.now();
    for (let i = 0; i < SLICES; i++) await cache.writeSlice(id, i, data, '"b"');
    writeKeel.push(performance.now() - t);
    t = performance.now();
    for (let i = 0; i < SLICES; i++) {
      const h = await open(path.join(rawDir, `s${i}`), 'w');
      await h.write(data);
      await h.sync();
      await h.close();
    }
    writeRaw.push(performance.now() - t);
  }
  if (!cache) throw new Error('no cache');

  // Reads: keel's verified stream of the whole object against raw streaming reads of the same slice files.
  const h = identityHash(id);
  const sliceFiles = Array.from({ length: SLICES }, (_, i) =>
    path.join(root, 'cache', 'objects', h.slice(0, 2), h, `slice-${i}`),
  );
  const readKeel: number[] = [];
  const readRaw: number[] = [];
  const readRatios: number[] = [];
  const rawRead = async (): Promise<void> => {
    const t = performance.now();
    let n = 0;
    for (const f of sliceFiles) n += await drain(createReadStream(f, { highWaterMark: 1024 * 1024 }));
    readRaw.push(performance.now() - t);
    if (n !== total) throw new Error('raw read short');
  };
  const keelRead = async (): Promise<void> => {
    const t = performance.now();
    const res = await cache.read(id, 0, total - 1);
    if (!res.hit) throw new Error(`cache miss: ${res.reason}`);
    const n = await drain(res.stream);
    readKeel.push(performance.now() - t);
    if (n !== total) throw new Error('cache read short');
  };
  for (let r = 0; r < ROUNDS; r++) {
    // Paired rounds in alternating order, so a noisy neighbour hits both sides alike.
    if (r % 2 === 0) {
      await rawRead();
      await keelRead();
    } else {
      await keelRead();
      await rawRead();
    }
    readRatios.push((readRaw.at(-1) ?? NaN) / (readKeel.at(-1) ?? NaN));
  }
  // Ranges, the gateway's common case: keel's verified in-memory reads against raw reads of the
  // same bytes (open, read, close), in alternating order.
  const ranges = async (len: number, count: number): Promise<Record<string, unknown>> => {
    const n = Math.floor(total / len);
    const offsets = Array.from({ length: count }, (_, i) => ((i * 7919) % n) * len);
    const keel: number[] = [];
    const raw: number[] = [];
    const ratios: number[] = [];
    const meta = await cache.getMeta(id);
    const keelRound = async (): Promise<void> => {
      const t = performance.now();
      for (const start of offsets) {
        const res = await cache.readBuffer(id, start, start + len - 1, meta ? { meta } : {});
        if (!res.hit) throw new Error(`range miss: ${res.reason}`);
        res.release();
      }
      keel.push(performance.now() - t);
    };
    const rawRound = async (): Promise<void> => {
      const t = performance.now();
      for (const start of offsets) {
        const fh = await open(sliceFiles[Math.floor(start / SLICE)] as string, 'r');
        await fh.read(Buffer.allocUnsafe(len), 0, len, start % SLICE);
        await fh.close();
      }
      raw.push(performance.now() - t);
    };
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2 === 0) {
        await rawRound();
        await keelRound();
      } else {
        await keelRound();
        await rawRound();
      }
      ratios.push((raw.at(-1) ?? NaN) / (keel.at(-1) ?? NaN));
    }
    return {
      keelVerifiedMBps: mbps(count * len, median(keel)),
      rawReadMBps: mbps(count * len, median(raw)),
      ratio: median(raw) / median(keel),
      pairedRatios: ratios,
    };
  };
  const ranges1MiB = {
    ...(await ranges(1024 * 1024, 64)),
    note: '64 reads of 1 MiB at scattered offsets, one at a time; each verifies the 64 KiB blocks it touches',
  };
  const ranges4KiB = {
    ...(await ranges(4096, 2000)),
    note: '2,000 reads of 4 KiB at scattered offsets, one at a time; each verifies one 64 KiB block',
  };
  await cache.close();

  // verify / cleanup over many small slices, laid out directly on disk.
  const manyDir = path.join(root, 'many');
  const small = randomBytes(512);
  const smallCrc = crc32(small);
  for (let o = 0; o < MANY_OBJECTS; o++) {
    const oid = { bucket: 'bench', key: `o${o}` };
    const hh = identityHash(oid);
    const dir = path.join(manyDir, 'objects', hh.slice(0, 2), hh);
    await mkdir(dir, { recursive: true });
    const meta: CacheMeta = {
      version: META_VERSION,
      identity: { ...oid, versionId: null },
      etag: '"x"',
      size: 512 * SLICES_PER_OBJECT,
      sliceBytes: 512,
      cachedAt: Date.now(),
      slices: Array.from({ length: SLICES_PER_OBJECT }, (_, index) => ({
        index,
        length: 512,
        crc32: smallCrc,
        lastAccess: 0,
      })),
    };
    await writeFile(path.join(dir, 'meta.json'), encodeMeta(meta));
    for (let i = 0; i < SLICES_PER_OBJECT; i++) await writeFile(path.join(dir, `slice-${i}`), small);
  }
  const files = MANY_OBJECTS * (SLICES_PER_OBJECT + 1);
  let t = performance.now();
  const many = await RangeCache.open({ dir: manyDir, sliceBytes: 512, maxBytes: 1e12, cleanupGraceMs: 0 });
  const openMs = performance.now() - t;
  t = performance.now();
  const verified = await many.verify();
  const verifyMs = performance.now() - t;
  t = performance.now();
  await many.cleanup();
  const cleanupMs = performance.now() - t;
  await many.close();

  // The CRC-32 every verified read runs: the cache's (SIMD when @node-rs/crc32 loads) and zlib's,
  // alternating over the same 8 MiB, one 64 KiB block at a time as reads check them.
  const crcData = randomBytes(SLICE);
  const crcOf = (fn: (b: Uint8Array) => number): number => {
    const t0 = performance.now();
    for (let o = 0; o < crcData.length; o += 65536) fn(crcData.subarray(o, o + 65536));
    return performance.now() - t0;
  };
  const crcCache: number[] = [];
  const crcZlib: number[] = [];
  for (let r = 0; r < 21; r++) {
    crcCache.push(crcOf(cacheCrc32));
    crcZlib.push(crcOf(crc32));
  }

  const result = {
    machine: {
      cpus: os.cpus().length,
      node: process.version,
      loadAverage: { atStart: loadAtStart, atEnd: os.loadavg() },
    },
    note: 'medians; page cache warm for both keel and raw reads; same files on the same disk',
    sliceBytes: SLICE,
    objectBytes: total,
    write: {
      keelMBps: mbps(total, median(writeKeel)),
      rawFsyncMBps: mbps(total, median(writeRaw)),
      ratio: median(writeRaw) / median(writeKeel),
    },
    read: {
      keelVerifiedMBps: mbps(total, median(readKeel)),
      rawStreamMBps: mbps(total, median(readRaw)),
      ratio: median(readRaw) / median(readKeel),
      pairedRatioMedian: median(readRatios),
      pairedRatios: readRatios,
      target: '>= 0.7',
    },
    verifyThreads: 'default (one per core, at most 4)',
    crc32: {
      module: fastCrc32Module === undefined ? 'node:zlib' : '@node-rs/crc32',
      cacheMBps: mbps(SLICE, median(crcCache)),
      zlibMBps: mbps(SLICE, median(crcZlib)),
      ratio: median(crcZlib) / median(crcCache),
      note: 'one core, 64 KiB blocks of 8 MiB in memory, 21 alternating rounds',
    },
    ranges1MiB,
    ranges4KiB,
    manySlices: {
      slices: MANY_OBJECTS * SLICES_PER_OBJECT,
      files,
      openRebuildFilesPerSec: files / (openMs / 1000),
      verifyFilesPerSec: files / (verifyMs / 1000),
      cleanupFilesPerSec: files / (cleanupMs / 1000),
      verifyFound: { checksumFailures: verified.checksumFailures, slicesChecked: verified.slicesChecked },
    },
  };
  await mkdir(path.join(import.meta.dirname, 'results'), { recursive: true });
  await writeFile(
    path.join(import.meta.dirname, 'results', 'cache.json'),
    `${JSON.stringify(result, null, 2)}\n`,
  );
  console.log(JSON.stringify(result, null, 2));
} finally {
  await rm(root, { recursive: true, force: true });
}
