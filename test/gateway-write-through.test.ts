import { randomBytes } from 'node:crypto';
import { readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { Readable } from 'node:stream';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chaos } from 'keel/chaos';
import { createGateway, type Gateway } from '@keel/gateway';
import {
  CLIENT_KEY,
  gatewayOptions,
  gatewayWithFailing,
  s3,
  sha,
  signedRequest,
  SLICE,
  startHarness,
  startRecordedGateway,
  type Harness,
  type RawAnswer,
} from './gateway-protocol-support.js';

/*
 * Write-through: a PutObject through the gateway is cached once the origin accepted it with the
 * body's MD5, so the read after it is a HIT with no origin bytes; a write that fails, is cut or
 * answered with another ETag caches nothing.
 */

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

function crc32Base64(data: Buffer): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(zlib.crc32(data));
  return b.toString('base64');
}

const get = (g: Gateway, key: string, headers: Record<string, string> = {}): Promise<RawAnswer> =>
  signedRequest(g.url(), CLIENT_KEY, 'GET', `/b/${key}`, headers);

/** The headers a reader of the object sees, as a HIT or a MISS must both answer them. */
function objectHeaders(a: RawAnswer): Record<string, unknown> {
  const keep = ['content-type', 'content-length', 'etag', 'last-modified', 'cache-control'];
  return Object.fromEntries(
    Object.entries(a.headers).filter(([k]) => keep.includes(k) || k.startsWith('x-amz-meta-')),
  );
}

/** Files left in the gateway's staging directory. */
async function staged(cacheDir: string): Promise<string[]> {
  return readdir(path.join(cacheDir, 'write-through')).catch(() => []);
}

async function settled(g: Gateway): Promise<void> {
  for (let i = 0; i < 200 && g.inFlight() > 0; i++) await new Promise((r) => setTimeout(r, 10));
  await g.idle();
}

describe('write-through', () => {
  it('PutObject then GetObject: a HIT with no origin bytes, the same bytes and headers as a MISS', async () => {
    const cacheDir = `${h.cacheDir}-wt-basic`;
    const { gateway: g, recorder } = await startRecordedGateway(h, 'wt-basic', { sliceBytes: SLICE });
    const client = s3(g.url(), CLIENT_KEY);
    try {
      const data = randomBytes(SLICE * 3 + 17);
      await client.send(
        new PutObjectCommand({
          Bucket: 'b',
          Key: 'wt/basic.bin',
          Body: data,
          ContentType: 'application/x-keel-test',
          CacheControl: 'max-age=5',
          Metadata: { colour: 'blue' },
        }),
      );
      const before = recorder.bodyBytes();
      const hit = await get(g, 'wt/basic.bin');
      expect(hit.status).toBe(200);
      expect(hit.headers['x-keel-cache']).toBe('HIT');
      expect(recorder.bodyBytes() - before).toBe(0);
      expect(sha(hit.body)).toBe(sha(data));
      const ranged = await get(g, 'wt/basic.bin', { range: `bytes=${SLICE - 5}-${SLICE + 5}` });
      expect(ranged.headers['x-keel-cache']).toBe('HIT');
      expect(ranged.body.equals(data.subarray(SLICE - 5, SLICE + 6))).toBe(true);
      expect(recorder.bodyBytes() - before).toBe(0);
      expect(await staged(cacheDir)).toEqual([]);

      // What a gateway with nothing cached answers (a MISS) for the same object.
      const fresh = await createGateway(gatewayOptions(h.origin.url, { sliceBytes: SLICE }));
      await fresh.listen(0);
      try {
        const miss = await get(fresh, 'wt/basic.bin');
        expect(miss.headers['x-keel-cache']).not.toBe('HIT');
        expect(objectHeaders(hit)).toEqual(objectHeaders(miss));
        expect(hit.headers['x-amz-meta-colour']).toBe('blue');
        expect(hit.headers['content-type']).toBe('application/x-keel-test');
      } finally {
        await fresh.close(1000);
      }
    } finally {
      client.destroy();
      await g.close(1000);
      await recorder.close();
    }
  });

  it('an empty object is written through: a HEAD after it is a HIT', async () => {
    const { gateway: g, recorder } = await startRecordedGateway(h, 'wt-empty', { sliceBytes: SLICE });
    const client = s3(g.url(), CLIENT_KEY);
    try {
      await client.send(new PutObjectCommand({ Bucket: 'b', Key: 'wt/empty', Body: Buffer.alloc(0) }));
      const head = await signedRequest(g.url(), CLIENT_KEY, 'HEAD', '/b/wt/empty');
      expect(head.status).toBe(200);
      expect(head.headers['x-keel-cache']).toBe('HIT');
      expect(head.headers['content-length']).toBe('0');
      // A plain GET too: the object has no slice, but its metadata is known.
      const before = recorder.seen.length;
      const got = await get(g, 'wt/empty');
      expect(got.status).toBe(200);
      expect(got.body.length).toBe(0);
      expect(got.headers['x-keel-cache']).toBe('HIT');
      expect(recorder.seen.slice(before).map((r) => r.method)).toEqual([]);
    } finally {
      client.destroy();
      await g.close(1000);
      await recorder.close();
    }
  });

  it('a staging file that cannot be created does not fail the upload: it is stored, and only not cached', async () => {
    const cacheDir = `${h.cacheDir}-wt-nostage`;
    const g = await createGateway(gatewayOptions(h.origin.url, { cacheDir, sliceBytes: SLICE }));
    await g.listen(0);
    try {
      // The staging directory replaced by a file: every staging file fails with ENOTDIR.
      await rm(path.join(cacheDir, 'write-through'), { recursive: true, force: true });
      await writeFile(path.join(cacheDir, 'write-through'), 'not a directory');
      const data = randomBytes(SLICE * 2 + 1);
      const put = await signedRequest(g.url(), CLIENT_KEY, 'PUT', '/b/wt/nostage.bin', {}, data);
      expect(put.status).toBe(200);
      expect(await h.atOrigin('wt/nostage.bin')).toBe(sha(data));
      expect(await g.cache?.getMeta({ bucket: 'b', key: 'wt/nostage.bin', versionId: null })).toBeUndefined();
      expect(await g.metrics.registry.getSingleMetricAsString('keel_gateway_write_through_total')).toContain(
        'keel_gateway_write_through_total{result="not_cached"} 1',
      );
      const next = await get(g, 'wt/nostage.bin');
      expect(next.headers['x-keel-cache']).toBe('MISS');
      expect(sha(next.body)).toBe(sha(data));
    } finally {
      await g.close(1000);
    }
  });

  it('origin bytes for a 64 MiB PutObject and 10 GETs: the object once for the upload, nothing for the reads', async () => {
    const size = 64 * 1024 * 1024;
    const { gateway: g, recorder } = await startRecordedGateway(h, 'wt-64');
    const client = s3(g.url(), CLIENT_KEY);
    try {
      const data = randomBytes(size);
      await client.send(new PutObjectCommand({ Bucket: 'b', Key: 'wt/64.bin', Body: data }));
      const uploaded = recorder.seen.reduce((n, r) => n + r.body.length, 0);
      expect(uploaded).toBe(size);
      const before = recorder.bodyBytes();
      for (let i = 0; i < 10; i++) {
        const got = await get(g, 'wt/64.bin');
        expect(got.headers['x-keel-cache']).toBe('HIT');
        expect(got.body.length).toBe(size);
        if (i === 0) expect(sha(got.body)).toBe(sha(data));
      }
      expect(recorder.bodyBytes() - before).toBe(0);
    } finally {
      client.destroy();
      await g.close(1000);
      await recorder.close();
    }
  });

  it('an aws-chunked upload with a checksum trailer is written through too', async () => {
    const { gateway: g, recorder } = await startRecordedGateway(h, 'wt-chunked', { sliceBytes: SLICE });
    const client = s3(g.url(), CLIENT_KEY);
    try {
      const data = randomBytes(SLICE * 2 + 5);
      await client.send(
        new PutObjectCommand({
          Bucket: 'b',
          Key: 'wt/chunked.bin',
          Body: Readable.from([data.subarray(0, SLICE), data.subarray(SLICE)]),
          ContentLength: data.length,
          ChecksumAlgorithm: 'CRC32',
        }),
      );
      const put = recorder.seen.find((r) => r.method === 'PUT');
      // The SDK sent the body aws-chunked with its CRC32 as a trailer, which reached the origin as a header.
      expect(put?.headers['x-amz-checksum-crc32']).toBe(crc32Base64(data));
      const before = recorder.bodyBytes();
      const hit = await get(g, 'wt/chunked.bin');
      expect(hit.headers['x-keel-cache']).toBe('HIT');
      expect(sha(hit.body)).toBe(sha(data));
      expect(recorder.bodyBytes() - before).toBe(0);
    } finally {
      client.destroy();
      await g.close(1000);
      await recorder.close();
    }
  });

  it('a PUT cut mid-body caches nothing: the next GET is a MISS with the origin bytes', async () => {
    const cacheDir = `${h.cacheDir}-wt-cut`;
    const old = randomBytes(SLICE + 3);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'wt/cut.bin', Body: old }));
    const g = await createGateway(gatewayOptions(h.origin.url, { cacheDir, sliceBytes: SLICE }));
    await g.listen(0);
    const proxy = await chaos.proxy({ upstream: `127.0.0.1:${new URL(g.url()).port}` });
    try {
      const data = randomBytes(SLICE * 4);
      // The connection to the gateway closes after the headers and half the body.
      proxy.add({ type: 'limit_data', stream: 'upstream', attributes: { bytes: SLICE * 2 } });
      const cut = await signedRequest(
        `http://127.0.0.1:${proxy.port}`,
        CLIENT_KEY,
        'PUT',
        '/b/wt/cut.bin',
        {},
        data,
      ).catch((err: unknown) => err);
      expect(cut).toBeInstanceOf(Error);
      await settled(g);
      expect(await g.cache?.getMeta({ bucket: 'b', key: 'wt/cut.bin', versionId: null })).toBeUndefined();
      expect(await staged(cacheDir)).toEqual([]);
      expect(await h.atOrigin('wt/cut.bin')).toBe(sha(old));
      const next = await get(g, 'wt/cut.bin');
      expect(next.headers['x-keel-cache']).toBe('MISS');
      expect(sha(next.body)).toBe(sha(old));
    } finally {
      await proxy.close();
      await g.close(1000);
    }
  });

  it('an origin 500 on the PUT caches nothing: the next GET is a MISS with the origin bytes', async () => {
    const cacheDir = `${h.cacheDir}-wt-500`;
    const old = randomBytes(SLICE + 3);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'wt/fails.bin', Body: old }));
    const { gateway: g, faults } = await gatewayWithFailing(
      h,
      { name: 'put-fails', method: 'PUT', path: '/b/wt/fails.bin' },
      cacheDir,
    );
    try {
      const put = await signedRequest(
        g.url(),
        CLIENT_KEY,
        'PUT',
        '/b/wt/fails.bin',
        {},
        randomBytes(SLICE * 2),
      );
      expect(put.status).toBe(500);
      expect(faults.stats.faults['put-fails']).toBe(1);
      expect(await g.cache?.getMeta({ bucket: 'b', key: 'wt/fails.bin', versionId: null })).toBeUndefined();
      expect(await staged(cacheDir)).toEqual([]);
      const next = await get(g, 'wt/fails.bin');
      expect(next.headers['x-keel-cache']).toBe('MISS');
      expect(sha(next.body)).toBe(sha(old));
    } finally {
      await g.close(1000);
      await faults.close();
    }
  });

  it("an origin answering another ETag than the body's MD5 caches nothing", async () => {
    const cacheDir = `${h.cacheDir}-wt-etag`;
    // An origin that stores the object but answers the PUT with an ETag of its own (as SSE-KMS does).
    const up = new URL(h.origin.url);
    const server = http.createServer((req, res) => {
      const fwd = http.request(
        { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
        (r) => {
          const headers = { ...r.headers };
          if (req.method === 'PUT') headers.etag = '"0123456789abcdef0123456789abcdef"';
          res.writeHead(r.statusCode ?? 502, headers);
          r.pipe(res);
        },
      );
      fwd.on('error', () => res.destroy());
      req.pipe(fwd);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const g = await createGateway(
      gatewayOptions(`http://127.0.0.1:${port}`, { cacheDir, sliceBytes: SLICE }),
    );
    await g.listen(0);
    try {
      const data = randomBytes(SLICE + 1);
      const put = await signedRequest(g.url(), CLIENT_KEY, 'PUT', '/b/wt/etag.bin', {}, data);
      expect(put.status).toBe(200);
      expect(await g.cache?.getMeta({ bucket: 'b', key: 'wt/etag.bin', versionId: null })).toBeUndefined();
      expect(await staged(cacheDir)).toEqual([]);
      const next = await get(g, 'wt/etag.bin');
      expect(next.headers['x-keel-cache']).toBe('MISS');
      expect(sha(next.body)).toBe(sha(data));
    } finally {
      await g.close(1000);
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
