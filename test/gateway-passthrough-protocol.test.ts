import { randomBytes } from 'node:crypto';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bodyOf, rawRequest, s3, sha, signedRequest, xmlField } from './gateway-protocol-support.js';
import { chunkedUpload, presign, signedHeaders } from './gateway-sign-support.js';
import { KEY_A, KEY_B, setup, SLICE, type Setup } from './passthrough-origin.js';

let s: Setup;
beforeAll(async () => {
  s = await setup({ baseDomain: 'localhost' });
});
afterAll(async () => {
  await s.close();
});

describe('passthrough auth: presigned URLs', () => {
  it('serves a presigned GET and HEAD, cached once and then authorised by the origin each time', async () => {
    const data = randomBytes(SLICE + 1);
    const etag = await s.put('presigned.bin', data);
    const get = await presign(s.gateway.url(), KEY_A, 'GET', '/x/presigned.bin');
    const first = await rawRequest(s.gateway.url(), 'GET', get.pathAndQuery);
    expect(first.status).toBe(200);
    expect(sha(first.body)).toBe(sha(data));
    await s.gateway.idle();
    const before = s.origin.bodyBytes();
    const again = await rawRequest(s.gateway.url(), 'GET', get.pathAndQuery);
    expect(again.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(sha(again.body)).toBe(sha(data));
    expect(s.origin.bodyBytes() - before).toBe(0);
    expect(s.origin.judged.at(-1)).toMatchObject({ status: 304, ifNoneMatch: etag });

    const head = await presign(s.gateway.url(), KEY_A, 'HEAD', '/x/presigned.bin');
    const h = await rawRequest(s.gateway.url(), 'HEAD', head.pathAndQuery);
    expect(h.status).toBe(200);
    expect(h.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(h.headers['content-length']).toBe(String(data.length));
  });

  it('gives a presigned URL of key B, or one whose signature was altered, the origin’s 403 and no cached byte', async () => {
    const data = randomBytes(SLICE);
    await s.put('presigned-secret.bin', data);
    await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/presigned-secret.bin');
    await s.gateway.idle();
    const b = await presign(s.gateway.url(), KEY_B, 'GET', '/x/presigned-secret.bin');
    const denied = await rawRequest(s.gateway.url(), 'GET', b.pathAndQuery);
    expect(denied.status).toBe(403);
    expect(denied.headers['x-keel-cache']).toBe('DENIED');
    expect(denied.body.includes(data.subarray(0, 32))).toBe(false);
    const a = await presign(s.gateway.url(), KEY_A, 'GET', '/x/presigned-secret.bin');
    const altered = a.pathAndQuery.replace(
      /X-Amz-Signature=(.)/,
      (_m, c: string) => `X-Amz-Signature=${c === '0' ? '1' : '0'}`,
    );
    const forged = await rawRequest(s.gateway.url(), 'GET', altered);
    expect(forged.status).toBe(403);
    expect(xmlField(forged, 'Code')).toBe('SignatureDoesNotMatch');
    expect(forged.body.includes(data.subarray(0, 32))).toBe(false);
  });
});

describe('passthrough auth: ranges and partNumber', () => {
  it('caches the whole slices a ranged miss brought, and serves a range within them after a 304', async () => {
    const data = randomBytes(4 * SLICE);
    await s.put('ranged.bin', data);
    const miss = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/ranged.bin', {
      range: `bytes=${SLICE - 1}-${3 * SLICE}`,
    });
    expect(miss.status).toBe(206);
    expect(miss.headers['x-keel-cache']).toBe('MISS');
    expect(miss.body.equals(data.subarray(SLICE - 1, 3 * SLICE + 1))).toBe(true);
    await s.gateway.idle();
    // Slices 1 and 2 came whole: a range inside them is an authorised hit.
    const before = s.origin.bodyBytes();
    const hit = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/ranged.bin', {
      range: `bytes=${SLICE + 5}-${3 * SLICE - 1}`,
    });
    expect(hit.status).toBe(206);
    expect(hit.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(hit.body.equals(data.subarray(SLICE + 5, 3 * SLICE))).toBe(true);
    expect(s.origin.bodyBytes() - before).toBe(0);
    // Slice 0 was cut by the range: a read that needs it goes to the origin as the client signed it.
    const partly = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/ranged.bin', {
      range: 'bytes=0-99',
    });
    expect(partly.status).toBe(206);
    expect(partly.headers['x-keel-cache']).toBe('MISS');
    expect(partly.body.equals(data.subarray(0, 100))).toBe(true);
    expect(s.origin.judged.at(-1)).toMatchObject({ status: 206, ifNoneMatch: undefined });
  });

  it('forwards a partNumber read as signed, uncached', async () => {
    await s.put('parts.bin', randomBytes(1000));
    const res = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/parts.bin?partNumber=1');
    expect(res.headers['x-keel-authorization']).toBe('forwarded');
    expect(s.origin.judged.at(-1)).toMatchObject({ url: '/x/parts.bin?partNumber=1', status: res.status });
    const denied = await signedRequest(s.gateway.url(), KEY_B, 'GET', '/x/parts.bin?partNumber=1');
    expect(denied.status).toBe(403);
  });

  it('serves virtual-host-style requests (bucket.<base domain>) with the Host the client signed', async () => {
    const data = randomBytes(SLICE);
    await s.put('vhost.bin', data);
    const port = new URL(s.gateway.url()).port;
    const headers = await signedHeaders(`http://x.localhost:${port}`, KEY_A, 'GET', '/vhost.bin');
    const first = await rawRequest(s.gateway.url(), 'GET', '/vhost.bin', headers);
    expect(first.status).toBe(200);
    expect(sha(first.body)).toBe(sha(data));
    await s.gateway.idle();
    const again = await rawRequest(s.gateway.url(), 'GET', '/vhost.bin', headers);
    expect(again.headers['x-keel-authorization']).toBe('authorized-hit');
  });
});

describe('passthrough auth: uploads reach the origin exactly as signed', () => {
  it('passes a signed aws-chunked upload on undecoded, so the origin checks its chunk signatures', async () => {
    const data = randomBytes(200_000);
    const up = await chunkedUpload(s.gateway.url(), KEY_A, '/x/chunked.bin', data, { chunkBytes: 64 * 1024 });
    const res = await rawRequest(s.gateway.url(), 'PUT', '/x/chunked.bin', up.headers, up.body);
    expect(res.status).toBe(200);
    expect(res.headers['x-keel-authorization']).toBe('forwarded');
    const back = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/chunked.bin');
    expect(sha(back.body)).toBe(sha(data));

    // One flipped byte in a chunk: the origin's chunk-signature check refuses it.
    const bad = await chunkedUpload(s.gateway.url(), KEY_A, '/x/chunked.bin', randomBytes(100_000), {
      chunkBytes: 64 * 1024,
    });
    bad.body[70 * 1024] = (bad.body[70 * 1024] as number) ^ 1;
    const refused = await rawRequest(s.gateway.url(), 'PUT', '/x/chunked.bin', bad.headers, bad.body);
    expect(refused.status).toBe(403);
    expect(refused.headers['x-keel-cache']).toBe('DENIED');
    const still = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/chunked.bin');
    expect(sha(still.body)).toBe(sha(data));
  });

  it('passes an unsigned-payload aws-chunked upload with a checksum trailer on', async () => {
    const data = randomBytes(70_000);
    const up = await chunkedUpload(s.gateway.url(), KEY_A, '/x/trailer.bin', data, {
      signed: false,
      trailer: { algorithm: 'crc32' },
    });
    const res = await rawRequest(s.gateway.url(), 'PUT', '/x/trailer.bin', up.headers, up.body);
    expect(res.status).toBe(200);
    const back = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/trailer.bin');
    expect(sha(back.body)).toBe(sha(data));
  });

  it('runs an SDK multipart upload and PutObject through, drops the cached copy a write replaces, and refuses key B', async () => {
    const client = s3(s.gateway.url(), KEY_A);
    try {
      const old = randomBytes(SLICE);
      await client.send(new PutObjectCommand({ Bucket: 'x', Key: 'multi.bin', Body: old }));
      await bodyOf(await client.send(new GetObjectCommand({ Bucket: 'x', Key: 'multi.bin' })));
      await s.gateway.idle();
      const parts = [randomBytes(5 * 1024 * 1024), randomBytes(300_000)];
      const created = await client.send(new CreateMultipartUploadCommand({ Bucket: 'x', Key: 'multi.bin' }));
      const etags: string[] = [];
      for (const [i, body] of parts.entries()) {
        const out = await client.send(
          new UploadPartCommand({
            Bucket: 'x',
            Key: 'multi.bin',
            UploadId: created.UploadId,
            PartNumber: i + 1,
            Body: body,
          }),
        );
        etags.push(out.ETag as string);
      }
      await client.send(
        new CompleteMultipartUploadCommand({
          Bucket: 'x',
          Key: 'multi.bin',
          UploadId: created.UploadId,
          MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
        }),
      );
      // The completed upload dropped the cached copy: the next read is a miss, not a change found at the origin.
      const next = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/multi.bin');
      expect(next.headers['x-keel-authorization']).toBe('miss');
      expect(sha(next.body)).toBe(sha(Buffer.concat(parts)));
      const back = await bodyOf(await client.send(new GetObjectCommand({ Bucket: 'x', Key: 'multi.bin' })));
      expect(sha(back)).toBe(sha(Buffer.concat(parts)));

      const b = s3(s.gateway.url(), KEY_B);
      try {
        await expect(
          b.send(new PutObjectCommand({ Bucket: 'x', Key: 'multi.bin', Body: randomBytes(10) })),
        ).rejects.toMatchObject({ name: 'AccessDenied' });
      } finally {
        b.destroy();
      }
    } finally {
      client.destroy();
    }
  });
});
