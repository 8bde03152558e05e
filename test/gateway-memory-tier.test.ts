import { createHash, randomBytes } from 'node:crypto';
import * as realFs from 'node:fs/promises';
import { mkdtemp, open, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import type { CacheFs } from 'keel/cache';
import { sliceFileOf } from './cache-support.js';
import {
  originClient,
  sha,
  SLICE,
  startRecorder,
  TEST_CREDENTIALS,
  type Recorder,
} from './gateway-protocol-support.js';
import { startS3Origin, type S3Origin } from './s3-origin.js';

/*
 * The memory tier in front of the disk cache: hot ranges answered with no file-system call,
 * verified once as they enter, labelled HIT with x-keel-cache-tier: memory; a flip on disk is
 * still caught once a block is out of memory; writes drop what memory holds; a scan cannot flush
 * a hot set.
 */

let origin: S3Origin;
let recorder: Recorder;
let root: string;
let gateway: Gateway | undefined;
const data = new Map<string, Buffer>();
/** File-system calls the gateway's cache made, by name. */
const fsCalls = new Map<string, number>();
let n = 0;

/** The real file system, each call counted. */
const countingFs = new Proxy(realFs, {
  get(target, name: string) {
    const f = (target as unknown as Record<string, unknown>)[name];
    if (typeof f !== 'function') return f;
    return (...args: unknown[]) => {
      fsCalls.set(name, (fsCalls.get(name) ?? 0) + 1);
      return (f as (...a: unknown[]) => unknown).apply(target, args);
    };
  },
}) as unknown as CacheFs;

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

const totalFsCalls = (): number => [...fsCalls.values()].reduce((a, b) => a + b, 0);

async function put(key: string, size: number): Promise<Buffer> {
  const body = randomBytes(size);
  const s3 = originClient(origin);
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: body }));
  s3.destroy();
  data.set(key, body);
  return body;
}

async function start(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await createGateway({
    upstream: recorder.url,
    originCredentials: TEST_CREDENTIALS,
    auth: 'anonymous',
    cacheDir: path.join(root, `cache-${++n}`),
    sliceBytes: SLICE,
    defaultMetrics: false,
    cacheFs: countingFs,
    log: () => undefined,
    ...extra,
  });
  await g.listen(0);
  gateway = g;
  return g;
}

interface Answer {
  status: number;
  cache: string | undefined;
  tier: string | undefined;
  /** x-request-id, x-amz-request-id and x-amz-id-2, as sent. */
  ids: (string | undefined)[];
  body: Buffer;
}

function request(
  g: Gateway,
  method: string,
  p: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<Answer> {
  const u = new URL(g.url());
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method, path: p, headers, agent: false },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            cache: res.headers['x-keel-cache'] as string | undefined,
            tier: res.headers['x-keel-cache-tier'] as string | undefined,
            ids: ['x-request-id', 'x-amz-request-id', 'x-amz-id-2'].map(
              (h) => res.headers[h] as string | undefined,
            ),
            body: Buffer.concat(parts),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const range = (g: Gateway, key: string, start: number, end: number): Promise<Answer> =>
  request(g, 'GET', `/b/${key}`, { range: `bytes=${start}-${end}` });

function expectBytes(a: Answer, key: string, start: number, end: number): void {
  expect(a.status).toBe(206);
  expect(sha(a.body)).toBe(sha((data.get(key) as Buffer).subarray(start, end + 1)));
}

async function metric(g: Gateway, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await g.metrics.registry.getSingleMetric(name)?.get();
  const v = m?.values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  recorder = await startRecorder(origin.url);
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-memory-'));
  await put('hot.bin', 1024 * 1024);
  await put('small.bin', 2 * SLICE);
  await put('other.bin', 2 * SLICE);
});

afterEach(async () => {
  await gateway?.close(1000);
  gateway = undefined;
});

afterAll(async () => {
  await recorder.close();
  await origin.close();
  await rm(root, { recursive: true, force: true });
});

describe('the memory tier', () => {
  it('answers hot 4 KiB ranges and HEADs with no file-system call and no origin byte, labelled HIT from memory', async () => {
    const g = await start();
    const size = 1024 * 1024;
    const first = await request(g, 'GET', '/b/hot.bin');
    expect({ cache: first.cache, tier: first.tier }).toEqual({ cache: 'MISS', tier: undefined });
    await g.idle();
    // From disk, verified, and taken into memory.
    const second = await request(g, 'GET', '/b/hot.bin');
    expect({ cache: second.cache, tier: second.tier }).toEqual({ cache: 'HIT', tier: 'disk' });
    expect(sha(second.body)).toBe(sha(data.get('hot.bin') as Buffer));
    expect(await metric(g, 'keel_gateway_memory_bytes')).toBe(size);

    fsCalls.clear();
    const originBytes = recorder.bodyBytes();
    const hitsBefore = await metric(g, 'keel_gateway_requests_total', { method: 'GET', outcome: 'HIT' });
    const memoryHitsBefore = await metric(g, 'keel_gateway_memory_reads_total', { result: 'hit' });
    for (let i = 0; i < 100; i++) {
      const start = (i * 7919 * 4096) % (size - 4096);
      const a = await range(g, 'hot.bin', start, start + 4095);
      expectBytes(a, 'hot.bin', start, start + 4095);
      expect({ cache: a.cache, tier: a.tier }).toEqual({ cache: 'HIT', tier: 'memory' });
    }
    const head = await request(g, 'HEAD', '/b/hot.bin');
    expect({ status: head.status, cache: head.cache, tier: head.tier }).toEqual({
      status: 200,
      cache: 'HIT',
      tier: 'memory',
    });
    expect(Object.fromEntries(fsCalls)).toEqual({});
    expect(totalFsCalls()).toBe(0);
    expect(recorder.bodyBytes() - originBytes).toBe(0);
    expect(
      (await metric(g, 'keel_gateway_requests_total', { method: 'GET', outcome: 'HIT' })) - hitsBefore,
    ).toBe(100);
    expect((await metric(g, 'keel_gateway_memory_reads_total', { result: 'hit' })) - memoryHitsBefore).toBe(
      100,
    );
  });

  it('names every answer from memory with its own request id (x-request-id, x-amz-request-id, x-amz-id-2), a 304 and a 416 too', async () => {
    const g = await start();
    await request(g, 'GET', '/b/hot.bin');
    await g.idle();
    const second = await request(g, 'GET', '/b/hot.bin');
    expect(second.tier).toBe('disk');
    const answers = [
      await range(g, 'hot.bin', 0, 4095),
      await request(g, 'HEAD', '/b/hot.bin'),
      await request(g, 'GET', '/b/hot.bin', { 'if-none-match': `"${md5(data.get('hot.bin') as Buffer)}"` }),
      await request(g, 'GET', '/b/hot.bin', { range: 'bytes=2000000-2000010' }),
    ];
    expect(answers.map((a) => [a.status, a.cache, a.tier])).toEqual([
      [206, 'HIT', 'memory'],
      [200, 'HIT', 'memory'],
      [304, 'HIT', 'memory'],
      [416, 'HIT', undefined],
    ]);
    const ids = answers.map((a) => a.ids);
    for (const [requestId, amzId, id2] of ids) {
      expect(requestId).toMatch(/^[0-9A-F]{16}$/);
      expect([amzId, id2]).toEqual([requestId, requestId]);
    }
    expect(new Set(ids.map(([id]) => id)).size).toBe(ids.length);
    // The 416's error document names the same request.
    expect((answers[3] as Answer).body.toString()).toContain(
      `<RequestId>${(answers[3] as Answer).ids[0]}</RequestId>`,
    );
  });

  it('serves the right bytes from memory after a byte flips on disk, and the disk path catches the flip once the block is out of memory', async () => {
    // Room for one 64 KiB block only.
    const g = await start({ memoryCacheBytes: 64 * 1024 });
    expect((await range(g, 'small.bin', 0, 4095)).cache).toBe('MISS');
    await g.idle();
    const fromDisk = await range(g, 'small.bin', 0, 4095);
    expect({ cache: fromDisk.cache, tier: fromDisk.tier }).toEqual({ cache: 'HIT', tier: 'disk' });
    // Flip a byte of slice 0 on disk.
    const file = sliceFileOf(g.cache?.dir as string, { bucket: 'b', key: 'small.bin' }, 0);
    const h = await open(file, 'r+');
    const one = Buffer.alloc(1);
    await h.read(one, 0, 1, 100);
    one[0] = (one[0] as number) ^ 0xff;
    await h.write(one, 0, 1, 100);
    await h.close();
    const fromMemory = await range(g, 'small.bin', 0, 4095);
    expect({ cache: fromMemory.cache, tier: fromMemory.tier }).toEqual({ cache: 'HIT', tier: 'memory' });
    expectBytes(fromMemory, 'small.bin', 0, 4095);
    // Another object's block, asked for more often, takes the only place.
    expect((await range(g, 'other.bin', 0, 4095)).cache).toBe('MISS');
    await g.idle();
    for (let i = 0; i < 6; i++) await range(g, 'other.bin', 0, 4095);
    const other = await range(g, 'other.bin', 0, 4095);
    expect({ cache: other.cache, tier: other.tier }).toEqual({ cache: 'HIT', tier: 'memory' });
    // small.bin's block is out of memory: the disk read finds the flip, and the bytes come from the origin.
    const repaired = await range(g, 'small.bin', 0, 4095);
    expectBytes(repaired, 'small.bin', 0, 4095);
    expect(repaired.cache).toBe('MISS');
    expect(repaired.tier).toBeUndefined();
    expect(g.cache?.stats().repairs.corruption_missing_range_total).toBeGreaterThan(0);
  });

  it('forgets an object a write replaced: the read after a PUT never answers the old bytes from memory', async () => {
    await put('rewritten.bin', 2 * SLICE);
    const g = await start();
    await range(g, 'rewritten.bin', 0, 4095);
    await g.idle();
    await range(g, 'rewritten.bin', 0, 4095);
    const old = await range(g, 'rewritten.bin', 0, 4095);
    expect(old.tier).toBe('memory');
    const fresh = randomBytes(2 * SLICE);
    const put1 = await request(
      g,
      'PUT',
      '/b/rewritten.bin',
      { 'content-length': String(fresh.length) },
      fresh,
    );
    expect(put1.status).toBe(200);
    data.set('rewritten.bin', fresh);
    await g.idle();
    const after = await range(g, 'rewritten.bin', 0, 4095);
    expectBytes(after, 'rewritten.bin', 0, 4095);
    expect(after.tier).not.toBe('memory');
  });

  it('with --memory-cache-bytes 0 serves every hit from disk, and /metrics shows an empty tier', async () => {
    const g = await start({ memoryCacheBytes: 0 });
    await range(g, 'small.bin', 0, 4095);
    await g.idle();
    for (let i = 0; i < 3; i++) {
      const a = await range(g, 'small.bin', 0, 4095);
      expect({ cache: a.cache, tier: a.tier }).toEqual({ cache: 'HIT', tier: 'disk' });
      expectBytes(a, 'small.bin', 0, 4095);
    }
    expect(await metric(g, 'keel_gateway_memory_max_bytes')).toBe(0);
    expect(await metric(g, 'keel_gateway_memory_bytes')).toBe(0);
  });

  it('keeps a hot set of 20 objects in memory while a 32 MiB object is read through once in 1 MiB ranges (hot-set hit ratio >= 95 %)', async () => {
    const hot = Array.from({ length: 20 }, (_, i) => `hot-${i}.bin`);
    for (const k of hot) await put(k, 16 * 1024);
    await put('scan.bin', 32 * 1024 * 1024);
    // 4 MiB of memory: a least-recently-used tier would lose every hot block, since 10 MiB of the
    // scan passes between two reads of one.
    const g = await start({ memoryCacheBytes: 4 * 1024 * 1024, sliceBytes: 1024 * 1024 });
    const scan = await request(g, 'GET', '/b/scan.bin');
    expect(scan.cache).toBe('MISS');
    for (const k of hot) await request(g, 'GET', `/b/${k}`);
    await g.idle();
    // Warm: the hot set read twice over (from disk, then from memory).
    for (let round = 0; round < 2; round++) for (const k of hot) await request(g, 'GET', `/b/${k}`);
    let hits = 0;
    let reads = 0;
    for (let mib = 0; mib < 32; mib++) {
      const a = await range(g, 'scan.bin', mib * 1024 * 1024, (mib + 1) * 1024 * 1024 - 1);
      expectBytes(a, 'scan.bin', mib * 1024 * 1024, (mib + 1) * 1024 * 1024 - 1);
      expect(a.cache).toBe('HIT');
      for (let k = 0; k < 2; k++) {
        const key = hot[reads % hot.length] as string;
        const h = await request(g, 'GET', `/b/${key}`);
        expect(sha(h.body)).toBe(sha(data.get(key) as Buffer));
        reads++;
        if (h.tier === 'memory') hits++;
      }
    }
    expect(hits / reads).toBeGreaterThanOrEqual(0.95);
    expect(await metric(g, 'keel_gateway_memory_bytes')).toBeLessThanOrEqual(4 * 1024 * 1024);
  });
});
