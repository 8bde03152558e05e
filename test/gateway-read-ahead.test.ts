import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chaos, faultyFs, type ChaosProxy } from 'keel/chaos';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import { originClient } from './gateway-protocol-support.js';
import { until } from './gateway-run-support.js';
import { startCountingFront, type CountingFront } from './gateway-read-ahead-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

// Origin path: gateway → counting front (what the origin is asked, and how much at once) → chaos
// TCP proxy (bandwidth, resets, cuts) → s3rver. The bandwidth toxic sits behind the front, so an
// answer the front is sending is one the origin is still sending.
const SLICE = 256 * 1024;
const SLICES = 16;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
let origin: S3Origin;
let tcp: ChaosProxy;
let front: CountingFront;
let s3: S3Client;
let root: string;
const gateways: Gateway[] = [];
let objects = 0;

async function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await createGateway({
    upstream: `http://127.0.0.1:${front.port}`,
    originCredentials: TEST_CREDENTIALS,
    auth: 'anonymous',
    cacheDir: await mkdtemp(path.join(root, 'cache-')),
    sliceBytes: SLICE,
    guard: { retryAttempts: 6, breakerFailures: 1000, retryBudgetRatio: 1 },
    // A loaded machine must not turn a slow test origin into timeouts this file is not about.
    firstByteTimeoutMs: 30_000,
    deadlineMs: 30_000,
    log: () => undefined,
    ...extra,
  });
  await g.listen(0);
  gateways.push(g);
  return g;
}

/** A new object of `size` random bytes at the origin, under a key of its own. */
async function object(size = SLICE * SLICES): Promise<{ key: string; body: Buffer }> {
  const key = `o${++objects}.bin`;
  const body = randomBytes(size);
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: body }));
  return { key, body };
}

/**
 * A GET that keeps whatever arrived, even when the gateway cuts the answer. `stopAfter`: the client
 * goes away once it has that many bytes.
 */
function get(
  g: Gateway,
  key: string,
  options: { range?: string; stopAfter?: number } = {},
): Promise<{ status: number; body: Buffer; complete: boolean; cache: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${g.url()}/b/${key}`,
      { headers: options.range ? { range: options.range } : {}, agent: false },
      (res) => {
        const parts: Buffer[] = [];
        let n = 0;
        res.on('data', (d: Buffer) => {
          parts.push(d);
          n += d.length;
          if (options.stopAfter !== undefined && n >= options.stopAfter) req.destroy();
        });
        res.on('error', () => undefined);
        res.on('close', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(parts),
            complete: res.complete,
            cache: res.headers['x-keel-cache'] as string | undefined,
          }),
        );
      },
    );
    req.on('error', (err) => {
      if (options.stopAfter === undefined) reject(err);
    });
  });
}

/** Limits each origin connection to `kbPerSecond` (1 KB = 1000 bytes), as one S3 connection is limited. */
function limitBandwidth(kbPerSecond: number): void {
  tcp.add({ type: 'bandwidth', name: 'bw', stream: 'downstream', attributes: { rate: kbPerSecond } });
}

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-read-ahead-'));
  tcp = await chaos.proxy({ upstream: `127.0.0.1:${origin.port}` });
  front = await startCountingFront(`http://127.0.0.1:${tcp.port}`);
  s3 = originClient(origin);
});

afterEach(() => {
  tcp.removeAll();
  front.reset();
});

afterAll(async () => {
  for (const g of gateways) await g.close(500);
  s3.destroy();
  await front.close();
  await tcp.close();
  await origin.close();
  await rm(root, { recursive: true, force: true, maxRetries: 5 });
});

describe('read-ahead on misses', () => {
  it('fetches up to --read-ahead-slices slices of one read at once and streams them in order', async () => {
    limitBandwidth(4_000);
    const { key, body } = await object();
    const g = await gateway();
    const got = await get(g, key);
    expect(got.status).toBe(200);
    expect(got.cache).toBe('MISS');
    expect(sha(got.body)).toBe(sha(body));
    expect(front.maxInFlight()).toBe(4);
    // Each slice once.
    expect(front.bytesSent()).toBe(body.length);

    front.reset();
    const other = await object();
    const one = await gateway({ readAheadSlices: 1 });
    expect(sha((await get(one, other.key)).body)).toBe(sha(other.body));
    expect(front.maxInFlight()).toBe(1);
  });

  it('fetches ahead only within the range asked for', async () => {
    limitBandwidth(4_000);
    const { key, body } = await object();
    const g = await gateway();
    const got = await get(g, key, { range: `bytes=${SLICE + 10}-${3 * SLICE + 9}` });
    expect(got.status).toBe(206);
    expect(sha(got.body)).toBe(sha(body.subarray(SLICE + 10, 3 * SLICE + 10)));
    // Slices 1, 2 and 3 only (the last one's fetch ends after the answer did).
    await g.idle();
    expect(front.bytesSent()).toBe(3 * SLICE);
  });

  it('serves every byte right when parallel fetches are reset or cut short', async () => {
    const { key, body } = await object();
    const g = await gateway();
    tcp.add({ type: 'reset_peer', name: 'reset', toxicity: 0.3, attributes: { timeout: 0 } });
    tcp.add({
      type: 'limit_data',
      name: 'cut',
      stream: 'downstream',
      toxicity: 0.5,
      attributes: { bytes: 100_000 },
    });
    const [all, part] = await Promise.all([
      get(g, key),
      get(g, key, { range: `bytes=${SLICE - 5}-${9 * SLICE}` }),
    ]);
    expect(all.status).toBe(200);
    expect(sha(all.body)).toBe(sha(body));
    expect(part.status).toBe(206);
    expect(sha(part.body)).toBe(sha(body.subarray(SLICE - 5, 9 * SLICE + 1)));
    // What was cached is right too.
    await g.idle();
    tcp.removeAll();
    const again = await get(g, key);
    expect(sha(again.body)).toBe(sha(body));
  });

  it("retries one slice's fetch answered 503 and serves every byte", async () => {
    const { key, body } = await object();
    const g = await gateway();
    front.failOnce(5 * SLICE);
    const got = await get(g, key);
    expect(got.status).toBe(200);
    expect(sha(got.body)).toBe(sha(body));
    expect(front.ranges().filter((r) => r.startsWith(`bytes=${5 * SLICE}-`))).toHaveLength(2);
  });

  it('never mixes versions when the object changes at the origin in the middle of a read', async () => {
    limitBandwidth(2_000);
    const { key, body } = await object();
    const g = await gateway();
    const reading = get(g, key);
    // Once the first slices are on their way, a new version replaces the object. s3rver rewrites
    // an object's file in place, so answers it is still sending would turn into the new bytes
    // half-way (S3 replaces objects atomically): the old file is deleted first, which leaves
    // those answers reading the old one, as S3's would.
    await until(() => front.bytesSent() >= 2 * SLICE, 'the first slices on their way');
    const next = randomBytes(body.length);
    await s3.send(new DeleteObjectCommand({ Bucket: 'b', Key: key }));
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: next }));
    const got = await reading;
    // Either all of the old version, or a cut answer whose bytes are all the old version's.
    expect(got.body.equals(body.subarray(0, got.body.length))).toBe(true);
    if (got.complete) expect(got.body.length).toBe(body.length);
    tcp.removeAll();
    await g.idle();
    const after = await get(g, key);
    expect(after.status).toBe(200);
    expect(sha(after.body)).toBe(sha(next));
  });
});

describe('a client that goes away', () => {
  it('cancels the fetches it alone was waiting for: no origin answer goes on being sent', async () => {
    limitBandwidth(500);
    const { key, body } = await object();
    const g = await gateway();
    const got = await get(g, key, { stopAfter: 64 * 1024 });
    expect(got.complete).toBe(false);
    // Every fetch it started stops (none was nearly done: at this rate a slice takes half a second).
    await until(() => front.inFlight() === 0, 'every origin answer stopped');
    const sent = front.bytesSent();
    await new Promise((r) => setTimeout(r, 300));
    expect(front.inFlight()).toBe(0);
    expect(front.bytesSent()).toBe(sent);
    // The four slices it had under way would be 4 × SLICE had they gone on.
    expect(sent).toBeLessThan(2 * SLICE);
    // The gateway forgot them: a later read fetches the object anew and gets it right.
    tcp.removeAll();
    expect(sha((await get(g, key)).body)).toBe(sha(body));
  });

  it('leaves the fetches another reader waits for running, and that reader gets every byte', async () => {
    limitBandwidth(2_000);
    const { key, body } = await object();
    const g = await gateway();
    const [gone, stays] = await Promise.all([get(g, key, { stopAfter: 64 * 1024 }), get(g, key)]);
    expect(gone.complete).toBe(false);
    expect(stays.status).toBe(200);
    expect(sha(stays.body)).toBe(sha(body));
    // Nothing fetched twice: the fetches the first reader started went on for the second.
    expect(front.bytesSent()).toBe(body.length);
  });
});

describe('the origin guard bounds the parallel fetches', () => {
  it('20 readers of 20 cold objects never have more origin answers under way than connections configured', async () => {
    limitBandwidth(5_000);
    const all = await Promise.all(Array.from({ length: 20 }, () => object(4 * SLICE)));
    // 20 first requests fit the bulkhead (10 running, 10 queued); connections are the tighter bound.
    const g = await gateway({
      originConnections: 6,
      guard: { maxConcurrent: 10, retryAttempts: 6, breakerFailures: 1000, retryBudgetRatio: 1 },
    });
    const got = await Promise.all(all.map((o) => get(g, o.key)));
    got.forEach((r, i) => {
      expect(r.status).toBe(200);
      expect(sha(r.body)).toBe(sha((all[i] as { body: Buffer }).body));
    });
    expect(front.maxInFlight()).toBeLessThanOrEqual(6);
    // Without that bound the same reads have many more at once: the bound above is what held.
    front.reset();
    const more = await Promise.all(Array.from({ length: 20 }, () => object(4 * SLICE)));
    const free = await gateway();
    await Promise.all(more.map((o) => get(free, o.key)));
    expect(front.maxInFlight()).toBeGreaterThan(6);
  });
});

describe('the stream never waits for the disk', () => {
  it('streams a miss as fast with a cache disk that stalls every write as with a quick one', async () => {
    limitBandwidth(1_000);
    const quickFs = faultyFs();
    const stalledFs = faultyFs();
    stalledFs.stall({ ms: 200, ops: ['write', 'sync', 'rename', 'writeFile'] });
    const quick = await gateway({ cacheFs: quickFs });
    const stalled = await gateway({ cacheFs: stalledFs });
    const timed = async (g: Gateway): Promise<number> => {
      const { key, body } = await object(8 * SLICE);
      const t = performance.now();
      const got = await get(g, key);
      const ms = performance.now() - t;
      expect(sha(got.body)).toBe(sha(body));
      return ms;
    };
    // Alternating, three times each; the quickest of each is compared (a loaded machine adds, never removes).
    const quickMs: number[] = [];
    const stalledMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      quickMs.push(await timed(quick));
      stalledMs.push(await timed(stalled));
    }
    expect(Math.min(...stalledMs)).toBeLessThanOrEqual(Math.min(...quickMs) * 1.1);
    // The stalled disk did get the writes (behind the stream); they finish once it recovers.
    expect(stalledFs.counts.calls.sync ?? 0).toBeGreaterThan(0);
    stalledFs.clear();
    await stalled.idle(30_000);
  });
});
