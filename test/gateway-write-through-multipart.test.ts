import { createHash, randomBytes } from 'node:crypto';
import { readdir, readlink } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateway } from '@keel/gateway';
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
} from './gateway-protocol-support.js';

/*
 * Write-through of multipart uploads: parts are staged as they upload; CompleteMultipartUpload
 * commits them when the origin's ETag is the one their bytes make; abort or a failed complete
 * drops them.
 */

const MiB = 1024 * 1024;
let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

async function staged(cacheDir: string): Promise<string[]> {
  return readdir(path.join(cacheDir, 'write-through')).catch(() => []);
}

/** Staging files this process holds open (Linux: /proc/self/fd). */
async function openStaged(cacheDir: string): Promise<string[]> {
  const dir = path.join(cacheDir, 'write-through');
  const open: string[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target.startsWith(dir)) open.push(target);
  }
  return open;
}

describe('multipart write-through', () => {
  it('an upload by lib-storage is cached: a ranged GET across parts and a whole GET are HITs with no origin bytes', async () => {
    const cacheDir = `${h.cacheDir}-wt-mpu`;
    const { gateway: g, recorder } = await startRecordedGateway(h, 'wt-mpu', { sliceBytes: SLICE });
    const client = s3(g.url(), CLIENT_KEY);
    try {
      const data = randomBytes(12 * MiB + 5);
      await new Upload({
        client,
        params: { Bucket: 'b', Key: 'wt/mpu.bin', Body: data, ContentType: 'video/x-keel' },
        partSize: 5 * MiB,
        queueSize: 2,
      }).done();
      expect(recorder.seen.filter((r) => r.method === 'PUT' && r.url.includes('partNumber=')).length).toBe(3);
      expect(await staged(cacheDir)).toEqual([]);
      const before = recorder.bodyBytes();
      const from = 5 * MiB - 10;
      const ranged = await signedRequest(g.url(), CLIENT_KEY, 'GET', '/b/wt/mpu.bin', {
        range: `bytes=${from}-${from + 99}`,
      });
      expect(ranged.status).toBe(206);
      expect(ranged.headers['x-keel-cache']).toBe('HIT');
      expect(ranged.body.equals(data.subarray(from, from + 100))).toBe(true);
      const whole = await signedRequest(g.url(), CLIENT_KEY, 'GET', '/b/wt/mpu.bin');
      expect(whole.headers['x-keel-cache']).toBe('HIT');
      expect(whole.headers['content-type']).toBe('video/x-keel');
      expect(sha(whole.body)).toBe(sha(data));
      expect(recorder.bodyBytes() - before).toBe(0);
    } finally {
      client.destroy();
      await g.close(1000);
      await recorder.close();
    }
  });

  it("an origin answering S3's multipart ETag (MD5 of the parts' MD5s, -N) has the upload cached under it", async () => {
    const key = 'wt/s3-etag.bin';
    const parts = [randomBytes(5 * MiB), randomBytes(100 * 1024 + 3)];
    const data = Buffer.concat(parts);
    const md5 = (b: Buffer): Buffer => createHash('md5').update(b).digest();
    const real = `"${md5(data).toString('hex')}"`;
    const s3Etag = `"${md5(Buffer.concat(parts.map(md5))).toString('hex')}-${parts.length}"`;
    // s3rver answers the whole object's MD5: this proxy makes it answer as S3 does for the key.
    const up = new URL(h.origin.url);
    const server = http.createServer((req, res) => {
      const ofKey = (req.url ?? '').split('?')[0] === `/b/${key}`;
      const completing = ofKey && req.method === 'POST' && (req.url ?? '').includes('uploadId=');
      const headers = { ...req.headers };
      if (ofKey && headers['if-match'] === s3Etag) headers['if-match'] = real;
      const fwd = http.request(
        { host: up.hostname, port: up.port, method: req.method, path: req.url, headers },
        (r) => {
          const out = { ...r.headers };
          if (ofKey && out.etag === real) out.etag = s3Etag;
          if (!completing) {
            res.writeHead(r.statusCode ?? 502, out);
            r.pipe(res);
            return;
          }
          const chunks: Buffer[] = [];
          r.on('data', (d: Buffer) => chunks.push(d));
          r.on('end', () => {
            const doc = Buffer.from(
              Buffer.concat(chunks)
                .toString()
                .replace(/<ETag>[^<]*<\/ETag>/, `<ETag>${s3Etag.replace(/"/g, '&quot;')}</ETag>`),
            );
            delete out['transfer-encoding'];
            res.writeHead(r.statusCode ?? 502, { ...out, 'content-length': String(doc.length) });
            res.end(doc);
          });
        },
      );
      fwd.on('error', () => res.destroy());
      req.pipe(fwd);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const g = await createGateway(
      gatewayOptions(`http://127.0.0.1:${port}`, { cacheDir: `${h.cacheDir}-wt-s3etag`, sliceBytes: SLICE }),
    );
    await g.listen(0);
    const client = s3(g.url(), CLIENT_KEY);
    try {
      const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: 'b', Key: key }));
      const listed = [];
      for (const [i, Body] of parts.entries()) {
        const { ETag } = await client.send(
          new UploadPartCommand({ Bucket: 'b', Key: key, UploadId, PartNumber: i + 1, Body }),
        );
        listed.push({ PartNumber: i + 1, ETag });
      }
      const done = await client.send(
        new CompleteMultipartUploadCommand({
          Bucket: 'b',
          Key: key,
          UploadId,
          MultipartUpload: { Parts: listed },
        }),
      );
      expect(done.ETag).toBe(s3Etag);
      expect(await g.metrics.registry.getSingleMetricAsString('keel_gateway_write_through_total')).toContain(
        'keel_gateway_write_through_total{result="cached"} 1',
      );
      const got = await signedRequest(g.url(), CLIENT_KEY, 'GET', `/b/${key}`);
      expect(got.headers['x-keel-cache']).toBe('HIT');
      expect(got.headers.etag).toBe(s3Etag);
      expect(sha(got.body)).toBe(sha(data));
    } finally {
      client.destroy();
      await g.close(1000);
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('an aborted upload caches nothing and leaves nothing staged; the cached object stays as it was', async () => {
    const cacheDir = `${h.cacheDir}-wt-abort`;
    const old = randomBytes(SLICE * 2 + 1);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'wt/abort.bin', Body: old }));
    const { gateway: g, recorder } = await startRecordedGateway(h, 'wt-abort', { sliceBytes: SLICE });
    const client = s3(g.url(), CLIENT_KEY);
    try {
      // Cached before the upload starts.
      await client.send(new GetObjectCommand({ Bucket: 'b', Key: 'wt/abort.bin' }));
      await g.idle();
      const { UploadId } = await client.send(
        new CreateMultipartUploadCommand({ Bucket: 'b', Key: 'wt/abort.bin' }),
      );
      for (const PartNumber of [1, 2])
        await client.send(
          new UploadPartCommand({
            Bucket: 'b',
            Key: 'wt/abort.bin',
            UploadId,
            PartNumber,
            Body: randomBytes(SLICE),
          }),
        );
      expect((await staged(cacheDir)).length).toBe(2);
      // Parts waiting for their upload's completion hold no file descriptor.
      if (process.platform === 'linux') expect(await openStaged(cacheDir)).toEqual([]);
      await client.send(new AbortMultipartUploadCommand({ Bucket: 'b', Key: 'wt/abort.bin', UploadId }));
      expect(await staged(cacheDir)).toEqual([]);
      const before = recorder.bodyBytes();
      const next = await signedRequest(g.url(), CLIENT_KEY, 'GET', '/b/wt/abort.bin');
      expect(next.headers['x-keel-cache']).toBe('HIT');
      expect(sha(next.body)).toBe(sha(old));
      expect(recorder.bodyBytes() - before).toBe(0);
    } finally {
      client.destroy();
      await g.close(1000);
      await recorder.close();
    }
  });

  it('a complete the origin fails caches nothing and drops the staged parts', async () => {
    const cacheDir = `${h.cacheDir}-wt-complete-500`;
    const { gateway: g, faults } = await gatewayWithFailing(
      h,
      { name: 'complete-fails', method: 'POST', path: '/b/wt/fails.bin' },
      cacheDir,
    );
    const client = s3(g.url(), CLIENT_KEY);
    try {
      // Created at the origin itself: the fault fails every POST of the key through the gateway.
      const { UploadId } = await h.direct.send(
        new CreateMultipartUploadCommand({ Bucket: 'b', Key: 'wt/fails.bin' }),
      );
      const { ETag } = await client.send(
        new UploadPartCommand({
          Bucket: 'b',
          Key: 'wt/fails.bin',
          UploadId,
          PartNumber: 1,
          Body: randomBytes(SLICE),
        }),
      );
      expect((await staged(cacheDir)).length).toBe(1);
      await expect(
        client.send(
          new CompleteMultipartUploadCommand({
            Bucket: 'b',
            Key: 'wt/fails.bin',
            UploadId,
            MultipartUpload: { Parts: [{ PartNumber: 1, ETag }] },
          }),
        ),
      ).rejects.toThrow();
      expect(faults.stats.faults['complete-fails']).toBeGreaterThan(0);
      expect(await staged(cacheDir)).toEqual([]);
      expect(await g.cache?.getMeta({ bucket: 'b', key: 'wt/fails.bin', versionId: null })).toBeUndefined();
    } finally {
      client.destroy();
      await g.close(1000);
      await faults.close();
    }
  });
});
