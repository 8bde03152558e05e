import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DeleteObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chaos, type ChaosProxy, type HttpFaultProxy } from 'keel/chaos';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import { VirtualClock } from 'keel';
import { originClient } from './gateway-protocol-support.js';
import { until } from './gateway-run-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

// Origin path: gateway → TCP chaos proxy (toxics) → HTTP fault proxy (counts requests) → s3rver.
const SLICE = 64 * 1024;
const TTL = 10_000;
/** The gateway's default revalidation timeout (virtual time). */
const REVALIDATION_TIMEOUT = 1_000;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
let origin: S3Origin;
let httpFaults: HttpFaultProxy;
let tcp: ChaosProxy;
let s3: S3Client;
let root: string;
const gateways: Gateway[] = [];

async function gateway(clock: VirtualClock, extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await createGateway({
    upstream: `http://127.0.0.1:${tcp.port}`,
    originCredentials: TEST_CREDENTIALS,
    auth: 'anonymous',
    cacheDir: await mkdtemp(path.join(root, 'cache-')),
    sliceBytes: SLICE,
    ttlMs: TTL,
    clock,
    // One attempt per call: a retry would sleep on the virtual clock.
    guard: { retryAttempts: 1, breakerFailures: 1000 },
    log: () => undefined,
    ...extra,
  });
  await g.listen(0);
  gateways.push(g);
  return g;
}

async function put(key: string, body: Buffer): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: body }));
}

async function get(
  g: Gateway,
  key: string,
  range?: string,
): Promise<{ status: number; body: Buffer; cache: string | null }> {
  const res = await fetch(`${g.url()}/b/${key}`, { headers: range ? { range } : {} });
  return {
    status: res.status,
    body: Buffer.from(await res.arrayBuffer()),
    cache: res.headers.get('x-keel-cache'),
  };
}

/** Counts the revalidations (HEAD requests) of `key` that reach the origin. */
function countHeads(key: string): () => number {
  const name = `heads-${key}`;
  httpFaults.add({ name, method: 'HEAD', path: `/b/${key}`, action: { type: 'delay', ms: 0 } });
  return () => httpFaults.stats.faults[name] ?? 0;
}

async function warm(g: Gateway, key: string, body: Buffer): Promise<void> {
  const first = await get(g, key);
  expect(first.cache).toBe('MISS');
  expect(sha(first.body)).toBe(sha(body));
  await g.idle();
  expect(g.cache?.stats().slices).toBe(Math.ceil(body.length / SLICE));
}

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-reval-'));
  httpFaults = await chaos.httpProxy({ upstream: origin.url });
  tcp = await chaos.proxy({ upstream: `127.0.0.1:${httpFaults.port}` });
  s3 = originClient(origin);
});

afterEach(() => {
  tcp.removeAll();
});

afterAll(async () => {
  for (const g of gateways) await g.close(500);
  s3.destroy();
  await tcp.close();
  await httpFaults.close();
  await origin.close();
  await rm(root, { recursive: true, force: true });
});

describe('gateway revalidation', () => {
  it('answers concurrent hits of an expired object from the cache with one revalidation while the origin stalls', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway(clock);
    const body = randomBytes(SLICE * 3 + 11);
    await put('stall.bin', body);
    await warm(g, 'stall.bin', body);
    const heads = countHeads('stall.bin');
    await clock.advance(TTL + 1);
    // The origin takes the request and never answers.
    tcp.add({ type: 'timeout', name: 'stall', stream: 'downstream', attributes: { timeout: 0 } });
    const N = 20;
    const hits = Array.from({ length: N }, (_, i) =>
      get(g, 'stall.bin', i % 2 === 0 ? undefined : 'bytes=1000-140000'),
    );
    await until(
      () => g.inFlight() === N && heads() === 1,
      'every request to arrive and the revalidation to reach the origin',
    );
    await clock.advance(REVALIDATION_TIMEOUT);
    const answers = await Promise.all(hits);
    answers.forEach((a, i) => {
      expect(a.cache).toBe('STALE');
      expect(a.status).toBe(i % 2 === 0 ? 200 : 206);
      expect(sha(a.body)).toBe(sha(i % 2 === 0 ? body : body.subarray(1000, 140001)));
    });
    expect(heads()).toBe(1);
    // The origin is failing: the next hits are served stale at once, without asking it again.
    for (let i = 0; i < 5; i++) {
      const again = await get(g, 'stall.bin', 'bytes=0-99');
      expect(again.cache).toBe('STALE');
      expect(sha(again.body)).toBe(sha(body.subarray(0, 100)));
    }
    expect(heads()).toBe(1);
    const scraped = await g.metrics.registry.metrics();
    expect(scraped).toContain('keel_gateway_revalidations_total{outcome="started"} 1');
    expect(scraped).toContain('keel_gateway_revalidations_total{outcome="failed"} 1');
    expect(scraped).toContain('keel_gateway_revalidations_total{outcome="skipped"} 5');
    // After the backoff the object is revalidated again; the origin confirms it (304): fresh.
    tcp.remove('stall');
    await clock.advance(1_000);
    const confirmed = await get(g, 'stall.bin');
    expect(confirmed.cache).toBe('HIT');
    expect(sha(confirmed.body)).toBe(sha(body));
    expect(heads()).toBe(2);
    await g.idle();
    // The 304 refreshed the TTL: no revalidation until it runs out again.
    await clock.advance(TTL - 1);
    expect((await get(g, 'stall.bin', 'bytes=5-9')).cache).toBe('HIT');
    expect(heads()).toBe(2);
  });

  it('waits for the configured revalidation timeout before serving STALE', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway(clock, { revalidation: { timeoutMs: 5_000 } });
    const body = randomBytes(SLICE + 5);
    await put('slow-timeout.bin', body);
    await warm(g, 'slow-timeout.bin', body);
    const heads = countHeads('slow-timeout.bin');
    await clock.advance(TTL + 1);
    tcp.add({ type: 'timeout', name: 'stall-5s', stream: 'downstream', attributes: { timeout: 0 } });
    let answered = false;
    const hit = get(g, 'slow-timeout.bin').finally(() => (answered = true));
    await until(() => heads() === 1, 'the revalidation to reach the origin');
    await clock.advance(REVALIDATION_TIMEOUT); // the default would give up here
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    await clock.advance(5_000 - REVALIDATION_TIMEOUT);
    const a = await hit;
    expect(a.cache).toBe('STALE');
    expect(sha(a.body)).toBe(sha(body));
    tcp.remove('stall-5s');
  });

  it('shares one revalidation between concurrent hits when the origin is slow, and serves them fresh', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway(clock);
    const body = randomBytes(SLICE * 2);
    await put('slow.bin', body);
    await warm(g, 'slow.bin', body);
    const heads = countHeads('slow.bin');
    await clock.advance(TTL + 1);
    // Slower than any real revalidation, but inside the (virtual) revalidation timeout.
    tcp.add({ type: 'latency', name: 'slow', stream: 'downstream', attributes: { latency: 150 } });
    const answers = await Promise.all(Array.from({ length: 30 }, () => get(g, 'slow.bin')));
    for (const a of answers) {
      expect(a.cache).toBe('HIT');
      expect(sha(a.body)).toBe(sha(body));
    }
    expect(heads()).toBe(1);
  });

  it('serves the cached copy STALE when the revalidation gets a 503, asking the origin once per backoff', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway(clock);
    const body = randomBytes(SLICE + 5);
    await put('failing.bin', body);
    await warm(g, 'failing.bin', body);
    await clock.advance(TTL + 1);
    httpFaults.add({
      name: 'failing-503',
      method: 'HEAD',
      path: '/b/failing.bin',
      action: { type: 'status', status: 503, retryAfterSeconds: 0 },
    });
    const asked = (): number => httpFaults.stats.faults['failing-503'] ?? 0;
    try {
      const answers = await Promise.all(Array.from({ length: 10 }, () => get(g, 'failing.bin')));
      for (const a of answers) {
        expect(a.cache).toBe('STALE');
        expect(sha(a.body)).toBe(sha(body));
      }
      expect(asked()).toBe(1);
      // Backoff doubles per failure: 1 s, then 2 s.
      await clock.advance(1_000);
      expect((await get(g, 'failing.bin')).cache).toBe('STALE');
      expect(asked()).toBe(2);
      await clock.advance(1_000);
      expect((await get(g, 'failing.bin')).cache).toBe('STALE');
      expect(asked()).toBe(2);
      await clock.advance(1_000);
      expect((await get(g, 'failing.bin')).cache).toBe('STALE');
      expect(asked()).toBe(3);
    } finally {
      httpFaults.remove('failing-503');
    }
  });

  it('serves new bytes, never mixed, when the object changed at the origin, and drops every old slice', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway(clock);
    const v1 = randomBytes(SLICE * 4);
    await put('changed.bin', v1);
    await warm(g, 'changed.bin', v1);
    const heads = countHeads('changed.bin');
    const v2 = randomBytes(SLICE * 3 + 100);
    await put('changed.bin', v2);
    await clock.advance(TTL + 1);
    const ranges = [undefined, 'bytes=0-99', `bytes=${SLICE - 10}-${SLICE * 2 + 10}`, 'bytes=-500'];
    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, i) => get(g, 'changed.bin', ranges[i % ranges.length])),
    );
    answers.forEach((a, i) => {
      const range = ranges[i % ranges.length];
      const want =
        range === undefined
          ? v2
          : range === 'bytes=-500'
            ? v2.subarray(v2.length - 500)
            : v2.subarray(Number(range.slice(6).split('-')[0]), Number(range.split('-')[1]) + 1);
      expect(a.cache).not.toBe('HIT');
      expect(sha(a.body)).toBe(sha(want));
    });
    expect(heads()).toBe(1);
    await g.idle();
    // Only the new version's slices are left, and they hold its bytes.
    expect(g.cache?.stats().slices).toBe(4);
    const again = await get(g, 'changed.bin');
    expect(again.cache).toBe('HIT');
    expect(sha(again.body)).toBe(sha(v2));
  });

  it('passes a 404 through and drops the cached copy when the object was deleted at the origin', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway(clock);
    const body = randomBytes(SLICE * 2);
    await put('deleted.bin', body);
    await warm(g, 'deleted.bin', body);
    await s3.send(new DeleteObjectCommand({ Bucket: 'b', Key: 'deleted.bin' }));
    // Within the TTL the cached copy is served as it is.
    expect((await get(g, 'deleted.bin')).cache).toBe('HIT');
    await clock.advance(TTL + 1);
    const gone = await get(g, 'deleted.bin');
    expect(gone.status).toBe(404);
    expect(gone.body.toString()).toContain('<Code>NoSuchKey</Code>');
    await g.idle();
    expect(g.cache?.stats().slices).toBe(0);
  });
});
