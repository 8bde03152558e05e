import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import * as fsp from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CacheFs } from 'keel/cache';
import { chaos, type HttpFaultProxy } from 'keel/chaos';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import { VirtualClock } from 'keel';
import { originClient } from './gateway-protocol-support.js';
import { until } from './gateway-run-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

// Origin path: gateway → HTTP fault proxy → s3rver. The proxy draws its faults from `script`, so
// which request gets which fault is decided by the test, not by chance.
const SLICE = 64 * 1024;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
let origin: S3Origin;
let faults: HttpFaultProxy;
let s3: S3Client;
let root: string;
/** Values the fault proxy draws for rules with a probability (one per rule per matching request). */
const script: number[] = [];
const gateways: Gateway[] = [];

async function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await createGateway({
    upstream: `http://127.0.0.1:${faults.port}`,
    originCredentials: TEST_CREDENTIALS,
    auth: 'anonymous',
    cacheDir: await mkdtemp(path.join(root, 'cache-')),
    sliceBytes: SLICE,
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

/** A GET that keeps whatever arrived, even when the gateway cuts the response. */
function get(
  g: Gateway,
  key: string,
  range?: string,
): Promise<{ status: number; body: Buffer; complete: boolean; cache: string | undefined }> {
  return new Promise((resolve, reject) => {
    http
      .get(`${g.url()}/b/${key}`, { headers: range ? { range } : {}, agent: false }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('error', () => undefined);
        res.on('close', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(parts),
            complete: res.complete,
            cache: res.headers['x-keel-cache'] as string | undefined,
          }),
        );
      })
      .on('error', reject);
  });
}

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-miss-'));
  faults = await chaos.httpProxy({ upstream: origin.url, random: () => script.shift() ?? 1 });
  s3 = originClient(origin);
});

afterEach(() => {
  faults.clear();
  script.length = 0;
});

afterAll(async () => {
  for (const g of gateways) await g.close(500);
  s3.destroy();
  await faults.close();
  await origin.close();
  await rm(root, { recursive: true, force: true });
});

describe('gateway misses', () => {
  it('has a waiter whose shared fetch failed fetch the rest of the slice for itself', async () => {
    const logs: string[] = [];
    // One attempt per origin call: the shared fetch's resume fails for good on its first 503.
    const g = await gateway({
      guard: { retryAttempts: 1, breakerFailures: 1000 },
      log: (_level, msg) => logs.push(msg),
    });
    const body = randomBytes(SLICE);
    await put('waiter.bin', body);
    const p = '/b/waiter.bin';
    // Per GET, the proxy draws once for each rule, in order: hold, cut, 503.
    faults.add({
      name: 'hold',
      method: 'GET',
      path: p,
      probability: 0.5,
      action: { type: 'delay', ms: 300 },
    });
    faults.add({
      name: 'cut',
      method: 'GET',
      path: p,
      probability: 0.5,
      action: { type: 'cut', afterBytes: 1000 },
    });
    faults.add({
      name: '503',
      method: 'GET',
      path: p,
      probability: 0.5,
      action: { type: 'status', status: 503 },
    });
    // The shared fetch: held (so every client joins it), then cut after 1000 bytes; its resume: 503.
    script.push(0, 0, 1, 1, 1, 0);
    const N = 8;
    const reads = Array.from({ length: N }, () => get(g, 'waiter.bin'));
    await until(() => g.inFlight() === N, 'every client to wait on the shared fetch');
    const answers = await Promise.all(reads);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.complete).toBe(true);
      expect(sha(a.body)).toBe(sha(body));
    }
    expect(faults.stats.faults).toMatchObject({ hold: 1, cut: 1, '503': 1 });
    expect(logs.filter((m) => m.startsWith('shared fetch of slice 0 of b/waiter.bin failed')).length).toBe(N);
    await g.idle();
    // The waiters' own fetches are not cached (none holds the whole slice); the next read is a miss.
    const next = await get(g, 'waiter.bin');
    expect(sha(next.body)).toBe(sha(body));
  });

  it('has the waiters fetch for themselves when the shared fetch fails before the origin answered', async () => {
    const g = await gateway({ guard: { retryAttempts: 1, breakerFailures: 1000 } });
    const body = randomBytes(SLICE * 2);
    await put('preopen.bin', body);
    // Slice 0 cached, so the read of slice 1 is a fill of its own (no lookup first).
    const first = await get(g, 'preopen.bin', 'bytes=0-9');
    expect(first.cache).toBe('MISS');
    await g.idle();
    faults.add({
      name: 'slow-503',
      method: 'GET',
      path: '/b/preopen.bin',
      probability: 0.5,
      action: { type: 'status', status: 503 },
    });
    faults.add({
      name: 'hold',
      method: 'GET',
      path: '/b/preopen.bin',
      probability: 0.5,
      action: { type: 'delay', ms: 300 },
    });
    // The shared fetch: held, then 503. Every other request goes through.
    script.push(0, 0);
    const N = 6;
    const reads = Array.from({ length: N }, () =>
      get(g, 'preopen.bin', `bytes=${SLICE + 5}-${SLICE + 5000}`),
    );
    await until(() => g.inFlight() === N, 'every client to wait on the shared fetch');
    const answers = await Promise.all(reads);
    // The request that started the shared fetch answers its failure (retries are off here); every
    // request that was waiting on it fetched for itself.
    const failed = answers.filter((a) => a.status === 503);
    expect(failed.length).toBe(1);
    const served = answers.filter((a) => a.status !== 503);
    expect(served.length).toBe(N - 1);
    for (const a of served) {
      expect(a.status).toBe(206);
      expect(sha(a.body)).toBe(sha(body.subarray(SLICE + 5, SLICE + 5001)));
    }
    expect(faults.stats.faults['slow-503']).toBe(1);
  });

  it('never mixes versions when the object changes between slices of one read, and drops every slice', async () => {
    const g = await gateway();
    const v1 = randomBytes(SLICE * 4);
    await put('mixed.bin', v1);
    // Slice 0 of v1 cached (with v1's metadata, fresh for the TTL).
    expect((await get(g, 'mixed.bin', 'bytes=0-99')).cache).toBe('MISS');
    await g.idle();
    expect(g.cache?.stats().slices).toBe(1);
    const v2 = randomBytes(SLICE * 4);
    await put('mixed.bin', v2);
    // Slice 0 comes from the cache (v1); slice 1 is fetched with If-Match v1: 412. The answer's
    // headers (v1's ETag) are out, so the read is cut, never continued with v2's bytes.
    const cut = await get(g, 'mixed.bin');
    expect(cut.status).toBe(200);
    expect(cut.complete).toBe(false);
    expect(cut.body.length).toBeLessThan(v1.length);
    expect(sha(cut.body)).toBe(sha(v1.subarray(0, cut.body.length)));
    await g.idle();
    // Every slice of the old version is gone; the next read is v2, whole.
    expect(g.cache?.stats().slices).toBe(0);
    const fresh = await get(g, 'mixed.bin');
    expect(fresh.cache).toBe('MISS');
    expect(fresh.complete).toBe(true);
    expect(sha(fresh.body)).toBe(sha(v2));
  });

  it('serves the new version when the first slice of a read is refused with 412 before the answer starts', async () => {
    const g = await gateway();
    const v1 = randomBytes(SLICE * 3);
    await put('changed-first.bin', v1);
    expect((await get(g, 'changed-first.bin', 'bytes=0-99')).cache).toBe('MISS');
    await g.idle();
    const v2 = randomBytes(SLICE * 3 + 7);
    await put('changed-first.bin', v2);
    // Slice 1 is the first one needed and not cached: its If-Match v1 fetch gets 412 before any
    // header goes out, so the gateway drops the object and serves v2.
    const range = `bytes=${SLICE + 1}-${SLICE * 3}`;
    const got = await get(g, 'changed-first.bin', range);
    expect(got.status).toBe(206);
    expect(got.complete).toBe(true);
    expect(sha(got.body)).toBe(sha(v2.subarray(SLICE + 1, SLICE * 3 + 1)));
    await g.idle();
    const whole = await get(g, 'changed-first.bin');
    expect(sha(whole.body)).toBe(sha(v2));
  });

  it('answers a GET of an object with no cached slice without waiting for its metadata', async () => {
    // Reads of metadata files wait at a gate the test opens after the answer arrived.
    let release: (() => void) | undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let gated = true;
    const stat = (async (p: Parameters<typeof fsp.stat>[0], o?: Parameters<typeof fsp.stat>[1]) => {
      if (gated && String(p).endsWith('meta.json')) await gate;
      return fsp.stat(p, o);
    }) as CacheFs['stat'];
    const g = await gateway({ cacheFs: { ...fsp, stat } });
    const body = randomBytes(SLICE - 3);
    await put('plain.bin', body);
    const got = await get(g, 'plain.bin');
    expect(got.cache).toBe('MISS');
    expect(sha(got.body)).toBe(sha(body));
    gated = false;
    release?.();
    await g.idle();
    expect(g.cache?.mayHaveSlices({ bucket: 'b', key: 'plain.bin', versionId: null })).toBe(true);
    const hit = await get(g, 'plain.bin');
    expect(hit.cache).toBe('HIT');
    expect(sha(hit.body)).toBe(sha(body));
  });

  it('has a GET arriving while the object is still being cached share the fetch under way', async () => {
    // Slice files wait at a gate: the slice stays in its shared fetch, not yet in the cache.
    let release: (() => void) | undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const open = (async (p: Parameters<typeof fsp.open>[0], ...rest: [string?]) => {
      if (path.basename(String(p)).startsWith('slice-')) await gate;
      return fsp.open(p, ...rest);
    }) as CacheFs['open'];
    const g = await gateway({ cacheFs: { ...fsp, open } });
    const body = randomBytes(SLICE - 3);
    await put('sharing.bin', body);
    const before = faults.stats.requests;
    const first = await get(g, 'sharing.bin');
    expect(first.cache).toBe('MISS');
    expect(sha(first.body)).toBe(sha(body));
    const id = { bucket: 'b', key: 'sharing.bin', versionId: null };
    for (let i = 0; i < 200 && !(await g.cache?.getMeta(id)); i++) await new Promise((r) => setTimeout(r, 5));
    expect(await g.cache?.getMeta(id)).toBeDefined();
    const second = await get(g, 'sharing.bin');
    expect(sha(second.body)).toBe(sha(body));
    // One origin request for both: the second read shared the fetch still waiting to be cached.
    expect(faults.stats.requests - before).toBe(1);
    release?.();
    await g.idle();
    expect((await get(g, 'sharing.bin')).cache).toBe('HIT');
  });

  it('answers an empty object at once when the origin announces a body byte it never sends', async () => {
    // Some S3 implementations answer a range of an empty object with `bytes 0-0/0` and a
    // Content-Length of 1, then send nothing: the gateway must not wait for that byte.
    const held: http.ServerResponse[] = [];
    const liar = http.createServer((req, res) => {
      req.resume();
      res.writeHead(206, {
        etag: '"d41d8cd98f00b204e9800998ecf8427e"',
        'content-range': 'bytes 0-0/0',
        'content-length': '1',
        'content-type': 'text/plain',
        'last-modified': 'Sat, 28 Nov 2026 09:00:00 GMT',
      });
      res.flushHeaders();
      held.push(res);
    });
    await new Promise<void>((r) => liar.listen(0, '127.0.0.1', r));
    try {
      const port = (liar.address() as { port: number }).port;
      const g = await gateway({ upstream: `http://127.0.0.1:${port}`, originCredentials: undefined });
      const answer = await get(g, 'empty.txt');
      expect(answer.status).toBe(200);
      expect(answer.complete).toBe(true);
      expect(answer.body.length).toBe(0);
      expect(answer.cache).toBe('MISS');
      // Cached as empty: the next read is a hit that does not ask the origin.
      await g.idle();
      const asked = held.length;
      const again = await get(g, 'empty.txt');
      expect([again.status, again.body.length, again.cache]).toEqual([200, 0, 'HIT']);
      expect(held.length).toBe(asked);
    } finally {
      for (const r of held) r.destroy();
      liar.closeAllConnections();
      await new Promise((r) => liar.close(r));
    }
  });

  it('answers a HEAD from cached metadata as a HIT without asking the origin, and STALE while the origin is down', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway({ ttlMs: 60_000, clock, guard: { retryAttempts: 1 } });
    const body = randomBytes(SLICE * 2 + 5);
    await put('head.bin', body);
    const head = (): Promise<{ status: number; cache: string | undefined; length: string | undefined }> =>
      new Promise((resolve, reject) => {
        http
          .request(`${g.url()}/b/head.bin`, { method: 'HEAD', agent: false }, (res) => {
            res.resume();
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                cache: res.headers['x-keel-cache'] as string | undefined,
                length: res.headers['content-length'],
              }),
            );
          })
          .on('error', reject)
          .end();
      });
    expect(await head()).toEqual({ status: 200, cache: 'MISS', length: String(body.length) });
    await g.idle();
    const before = faults.stats.requests;
    expect(await head()).toEqual({ status: 200, cache: 'HIT', length: String(body.length) });
    expect(faults.stats.requests).toBe(before);
    // Expired, and the origin answers 503: the HEAD is still answered, from the metadata, STALE.
    await clock.advance(120_000);
    faults.add({ method: 'HEAD', path: '/b/head.bin', action: { type: 'status', status: 503 } });
    expect(await head()).toEqual({ status: 200, cache: 'STALE', length: String(body.length) });
  });
});
