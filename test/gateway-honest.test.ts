import { randomBytes } from 'node:crypto';
import * as realFs from 'node:fs/promises';
import { mkdtemp, open, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import type { CacheFs } from 'keel/cache';
import { metaFileOf, sliceFileOf } from './cache-support.js';
import { originClient, sha, SLICE, startRecorder, type Recorder } from './gateway-protocol-support.js';
import { startS3Origin, type S3Origin } from './s3-origin.js';
import { failingOrigin } from './failing-origin.js';

/*
 * Every answer says where its bytes came from: the x-keel-cache header, the request's log line
 * and the outcome label of keel_gateway_requests_total agree with each other, and
 * keel_gateway_bytes_served_total{source} with the bytes that came from the cache and the origin.
 */

let origin: S3Origin;
let recorder: Recorder;
let root: string;
let gateway: Gateway;
let cacheDir: string;
const logged: { outcome?: string; url?: string }[] = [];
const data = new Map<string, Buffer>();
let n = 0;

/** A buffered hit (under 2 MiB) and a streamed one (over 2 MiB), each several slices. */
const SMALL = SLICE * 4 + 100;
const LARGE = 2 * 1024 * 1024 + SLICE * 3 + 100;

async function put(key: string, size: number): Promise<Buffer> {
  const body = randomBytes(size);
  const s3 = originClient(origin);
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: body }));
  s3.destroy();
  data.set(key, body);
  return body;
}

async function counter(name: string, labels: Record<string, string>): Promise<number> {
  const metric = await gateway.metrics.registry.getSingleMetric(name)?.get();
  const v = metric?.values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

interface Observed {
  status: number;
  /** The whole body arrived. */
  complete: boolean;
  cache: string | undefined;
  body: Buffer;
  /** Bytes the gateway received from the origin for this request. */
  originBytes: number;
  /** keel_gateway_bytes_served_total deltas. */
  served: { cache: number; origin: number };
  /** The outcome labels whose keel_gateway_requests_total moved, with by how much. */
  counted: Record<string, number>;
  /** The outcome of the request's log line. */
  logged: string | undefined;
}

const OUTCOMES = ['HIT', 'MISS', 'PARTIAL', 'STALE', 'BYPASS', 'PASS', 'ERROR', 'DENIED'];

/** Sends one request and observes every place that says what it was. */
async function observe(
  method: string,
  p: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<Observed> {
  const before = {
    cache: await counter('keel_gateway_bytes_served_total', { source: 'cache' }),
    origin: await counter('keel_gateway_bytes_served_total', { source: 'origin' }),
    bytes: recorder.bodyBytes(),
  };
  const outcomes: Record<string, number> = {};
  for (const o of OUTCOMES)
    outcomes[o] = await counter('keel_gateway_requests_total', {
      outcome: o,
      method: method === 'GET' || method === 'HEAD' ? method : 'OTHER',
    });
  const seen = logged.length;
  const a = await answerOf(gateway.url(), method, p, headers, body);
  // The request's log line and metrics are written once the response finished.
  for (let i = 0; i < 100 && logged.length === seen; i++) await new Promise((r) => setTimeout(r, 5));
  const counted: Record<string, number> = {};
  for (const o of OUTCOMES) {
    const d =
      (await counter('keel_gateway_requests_total', {
        outcome: o,
        method: method === 'GET' || method === 'HEAD' ? method : 'OTHER',
      })) - (outcomes[o] as number);
    if (d !== 0) counted[o] = d;
  }
  return {
    status: a.status,
    complete: a.complete,
    cache: a.headers['x-keel-cache'] as string | undefined,
    body: a.body,
    originBytes: recorder.bodyBytes() - before.bytes,
    served: {
      cache: (await counter('keel_gateway_bytes_served_total', { source: 'cache' })) - before.cache,
      origin: (await counter('keel_gateway_bytes_served_total', { source: 'origin' })) - before.origin,
    },
    counted,
    logged: logged.slice(seen).find((l) => l.url === p)?.outcome,
  };
}

/** A request's answer as far as it came: an answer cut short is `complete: false` with what arrived. */
function answerOf(
  base: string,
  method: string,
  p: string,
  headers: Record<string, string>,
  body?: Buffer,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; complete: boolean }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method, path: p, headers, agent: false },
      (res) => {
        const parts: Buffer[] = [];
        const done = (complete: boolean): void =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts),
            complete,
          });
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => done(true));
        res.on('error', () => done(false));
        res.on('aborted', () => done(false));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Header, log line and metric name the same outcome. */
function expectOutcome(o: Observed, outcome: string): void {
  expect({ header: o.cache, logged: o.logged, counted: o.counted }).toEqual({
    header: outcome,
    logged: outcome,
    counted: { [outcome]: 1 },
  });
}

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  recorder = await startRecorder(origin.url);
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-honest-'));
});

afterEach(async () => {
  await gateway.close(1000);
});

afterAll(async () => {
  await recorder.close();
  await origin.close();
  await rm(root, { recursive: true, force: true });
});

async function startGateway(extra: Partial<GatewayOptions> = {}): Promise<void> {
  cacheDir = path.join(root, `cache-${++n}`);
  gateway = await createGateway({
    upstream: recorder.url,
    auth: 'anonymous',
    cacheDir,
    sliceBytes: SLICE,
    defaultMetrics: false,
    ...extra,
    log: (_level, msg, fields) => {
      if (msg === 'request') logged.push(fields as { outcome?: string; url?: string });
    },
  });
  await gateway.listen(0);
}

describe.each([
  ['buffered', SMALL],
  ['streamed', LARGE],
])('a %s read', (name, size) => {
  const key = `${name}.bin`;
  beforeAll(async () => {
    await put(key, size);
  });

  it("is a MISS, then a HIT at once after it (the second read waits for the first one's cache writes); the origin sends the object once", async () => {
    await startGateway();
    const first = await observe('GET', `/b/${key}`);
    expect(sha(first.body)).toBe(sha(data.get(key) as Buffer));
    expectOutcome(first, 'MISS');
    expect(first.served).toEqual({ cache: 0, origin: size });
    const second = await observe('GET', `/b/${key}`);
    expect(sha(second.body)).toBe(sha(data.get(key) as Buffer));
    expectOutcome(second, 'HIT');
    expect(second.served).toEqual({ cache: size, origin: 0 });
    const third = await observe('GET', `/b/${key}`);
    expectOutcome(third, 'HIT');
    expect(first.originBytes + second.originBytes + third.originBytes).toBe(size);
  });

  it.each([
    ['missing', (f: string) => unlink(f)],
    ['truncated', (f: string) => truncate(f, 50)],
    [
      'corrupt',
      async (f: string) => {
        const fh = await open(f, 'r+');
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, 1000);
        b[0] = (b[0] as number) ^ 0xff;
        await fh.write(b, 0, 1, 1000);
        await fh.close();
      },
    ],
  ])(
    'with a %s slice is PARTIAL: that slice from the origin, the rest from the cache',
    async (_fault, plant) => {
      await startGateway();
      await observe('GET', `/b/${key}`);
      await gateway.idle();
      // The last slice, so the fault is met after the first bytes are known good.
      const last = Math.floor((size - 1) / SLICE);
      await plant(sliceFileOf(cacheDir, { bucket: 'b', key }, last));
      const got = await observe('GET', `/b/${key}`);
      expect(sha(got.body)).toBe(sha(data.get(key) as Buffer));
      expectOutcome(got, 'PARTIAL');
      const lastLength = size - last * SLICE;
      expect(got.served).toEqual({ cache: size - lastLength, origin: lastLength });
      await gateway.idle();
      expectOutcome(await observe('GET', `/b/${key}`), 'HIT');
    },
  );

  it('with corrupt metadata is a MISS that repairs it: the next read is a HIT', async () => {
    // The disk cache's own repair: no memory tier in front of it (that one answers from memory).
    await startGateway({ memoryCacheBytes: 0 });
    await observe('GET', `/b/${key}`);
    await gateway.idle();
    await writeFile(metaFileOf(cacheDir, { bucket: 'b', key }), '{"version":1,"garbage');
    // A read that still holds the metadata in memory is served from the verified slices (and
    // notices the file changed); the read that then finds the corrupt file is a MISS.
    let repaired = await observe('GET', `/b/${key}`);
    if (repaired.cache === 'HIT') repaired = await observe('GET', `/b/${key}`);
    expect(sha(repaired.body)).toBe(sha(data.get(key) as Buffer));
    expectOutcome(repaired, 'MISS');
    expect(repaired.originBytes).toBe(size);
    // That read rewrote the metadata and stored the slices: the next, right after it, is a hit.
    const next = await observe('GET', `/b/${key}`);
    expect(sha(next.body)).toBe(sha(data.get(key) as Buffer));
    expectOutcome(next, 'HIT');
    expect(next.originBytes).toBe(0);
  });
});

describe('a read over 16 MiB (streamed, not verified whole first)', () => {
  const HUGE = 17 * 1024 * 1024 + 100;
  const BIG_SLICE = 1024 * 1024;
  beforeAll(async () => {
    await put('huge.bin', HUGE);
  });

  it('with a missing slice file is PARTIAL: slice files are checked before the answer', async () => {
    await startGateway({ sliceBytes: BIG_SLICE });
    await observe('GET', '/b/huge.bin');
    await gateway.idle();
    await unlink(sliceFileOf(cacheDir, { bucket: 'b', key: 'huge.bin' }, 10));
    const got = await observe('GET', '/b/huge.bin');
    expect(sha(got.body)).toBe(sha(data.get('huge.bin') as Buffer));
    expectOutcome(got, 'PARTIAL');
    expect(got.served).toEqual({ cache: HUGE - BIG_SLICE, origin: BIG_SLICE });
  });

  it('with a slice that fails its check mid-stream ends the HIT there (never origin bytes under HIT); the next read is PARTIAL', async () => {
    await startGateway({ sliceBytes: BIG_SLICE });
    await observe('GET', '/b/huge.bin');
    await gateway.idle();
    const file = sliceFileOf(cacheDir, { bucket: 'b', key: 'huge.bin' }, 10);
    const fh = await open(file, 'r+');
    await fh.write(Buffer.from('flipped'), 0, 7, 5000);
    await fh.close();
    const cut = await observe('GET', '/b/huge.bin');
    expect(cut.cache).toBe('HIT');
    expect(cut.complete).toBe(false);
    expect(cut.body.length).toBeLessThan(HUGE);
    expect(cut.body.equals((data.get('huge.bin') as Buffer).subarray(0, cut.body.length))).toBe(true);
    expect(cut.served.origin).toBe(0);
    const next = await observe('GET', '/b/huge.bin');
    expect(sha(next.body)).toBe(sha(data.get('huge.bin') as Buffer));
    expectOutcome(next, 'PARTIAL');
    expect(next.served).toEqual({ cache: HUGE - BIG_SLICE, origin: BIG_SLICE });
  });
});

describe('HEAD', () => {
  beforeAll(async () => {
    await put('head.bin', SMALL);
  });

  it('after a GET is a HIT without asking the origin', async () => {
    await startGateway();
    await observe('GET', '/b/head.bin');
    await gateway.idle();
    const asked = recorder.seen.length;
    const head = await observe('HEAD', '/b/head.bin');
    expect(head.status).toBe(200);
    expectOutcome(head, 'HIT');
    expect(recorder.seen.length).toBe(asked);
  });

  it('right after a HEAD whose metadata is still being written: a HIT once it is, without asking the origin', async () => {
    // Metadata writes take 200 ms: the second HEAD arrives while the first one's is under way.
    const slowMeta: CacheFs = {
      ...realFs,
      rename: async (from, to) => {
        if (String(to).endsWith('meta.json')) await new Promise((r) => setTimeout(r, 200));
        return realFs.rename(from, to);
      },
    };
    await startGateway({ cacheFs: slowMeta });
    expectOutcome(await observe('HEAD', '/b/head.bin'), 'MISS');
    const asked = recorder.seen.length;
    expectOutcome(await observe('HEAD', '/b/head.bin'), 'HIT');
    expect(recorder.seen.length).toBe(asked);
  });

  it('twice within the TTL: a MISS, then a HIT without asking the origin', async () => {
    await startGateway();
    expectOutcome(await observe('HEAD', '/b/head.bin'), 'MISS');
    await gateway.idle();
    const asked = recorder.seen.length;
    expectOutcome(await observe('HEAD', '/b/head.bin'), 'HIT');
    expect(recorder.seen.length).toBe(asked);
  });
});

describe('answers the origin gave', () => {
  it('a listing and a 404 are PASS in header, log and metric', async () => {
    await startGateway();
    const list = await observe('GET', '/b?list-type=2');
    expect(list.status).toBe(200);
    expectOutcome(list, 'PASS');
    const missing = await observe('GET', '/b/no-such-key');
    expect(missing.status).toBe(404);
    expectOutcome(missing, 'PASS');
    // No object bytes were served, from either side.
    for (const o of [list, missing]) expect(o.served).toEqual({ cache: 0, origin: 0 });
  });

  it.each([true, false])(
    'a PUT (write-through %s) and a DELETE passed to the origin are PASS in header, log and metric',
    async (writeThrough) => {
      await startGateway({ writeThrough });
      const body = randomBytes(3000);
      const put = await observe(
        'PUT',
        `/b/written-${String(writeThrough)}.bin`,
        { 'content-length': '3000' },
        body,
      );
      expect(put.status).toBe(200);
      expectOutcome(put, 'PASS');
      const del = await observe('DELETE', `/b/written-${String(writeThrough)}.bin`);
      expect(del.status).toBe(204);
      expectOutcome(del, 'PASS');
      for (const o of [put, del]) expect(o.served).toEqual({ cache: 0, origin: 0 });
    },
  );
});

describe('an origin that fails once part of an object is cached', () => {
  let front: Awaited<ReturnType<typeof failingOrigin>>;
  beforeAll(async () => {
    await put('partly.bin', SMALL);
    // The recorder while it works; 500 InternalError while it fails.
    front = await failingOrigin(recorder.url);
  });
  afterAll(async () => {
    await front.close();
  });

  it('serves the cached range STALE, and answers an uncached range 503 ERROR (not STALE), header, log and metric alike', async () => {
    await startGateway({ upstream: front.url, ttlMs: 1, guard: { retryAttempts: 1 } });
    const first = await observe('GET', '/b/partly.bin', { range: `bytes=0-${SLICE - 1}` });
    expectOutcome(first, 'MISS');
    await gateway.idle();
    await new Promise((r) => setTimeout(r, 5)); // past the 1 ms TTL: the next read revalidates
    front.fail(true);
    try {
      const cached = await observe('GET', '/b/partly.bin', { range: `bytes=0-${SLICE - 1}` });
      expect(cached.status).toBe(206);
      expectOutcome(cached, 'STALE');
      expect(cached.served).toEqual({ cache: SLICE, origin: 0 });
      expect(cached.body.equals((data.get('partly.bin') as Buffer).subarray(0, SLICE))).toBe(true);
      const uncached = await observe('GET', '/b/partly.bin', {
        range: `bytes=${2 * SLICE}-${2 * SLICE + 99}`,
      });
      expect(uncached.status).toBe(503);
      expectOutcome(uncached, 'ERROR');
      expect(uncached.served).toEqual({ cache: 0, origin: 0 });
    } finally {
      front.fail(false);
    }
  });
});
