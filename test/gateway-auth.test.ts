import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateway } from '@keel/gateway';
import {
  CLIENT_KEY,
  rawRequest,
  sha,
  startHarness,
  startRecordedGateway,
  s3,
  TEST_CREDENTIALS,
  type Harness,
  type RawAnswer,
  xmlField,
} from './gateway-protocol-support.js';
import { checksumOf, chunkedUpload, presign, signedHeaders } from './gateway-sign-support.js';

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

const FINAL_CHUNK_BYTES = 86; // "0;chunk-signature=<64>\r\n\r\n"

/**
 * A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload of `data` to `key`, signed with the client key.
 * `contentLength` gives the Content-Length to sign from the full encoded length (to send a cut
 * body as a whole message).
 */
function signedChunkedPut(
  key: string,
  data: Buffer,
  chunkBytes: number,
  contentLength: (full: number) => number = (n) => n,
): Promise<{ headers: Record<string, string>; body: Buffer }> {
  return chunkedUpload(h.gateway.url(), CLIENT_KEY, `/b/${key}`, data, { chunkBytes, contentLength });
}

describe('streaming uploads in gateway auth mode', () => {
  it('stores a valid signed aws-chunked upload byte for byte', async () => {
    const data = randomBytes(200_000);
    const { headers, body } = await signedChunkedPut('chunked-ok.bin', data, 64 * 1024);
    const res = await rawRequest(h.gateway.url(), 'PUT', '/b/chunked-ok.bin', headers, body);
    expect(res.status).toBe(200);
    expect(await h.atOrigin('chunked-ok.bin')).toBe(sha(data));
  });

  it.each([
    [
      'a flipped byte in the second chunk',
      (b: Buffer) => flip(b, 64 * 1024 + 200),
      403,
      'SignatureDoesNotMatch',
    ],
    [
      'a flipped byte in the last chunk',
      (b: Buffer) => flip(b, b.length - 200),
      403,
      'SignatureDoesNotMatch',
    ],
    [
      'a wrong final chunk signature',
      (b: Buffer) => (b[b.length - 10] = b[b.length - 10] === 0x30 ? 0x31 : 0x30),
      403,
      'SignatureDoesNotMatch',
    ],
  ])('refuses %s and never stores it, keeping the old object', async (_what, tamper, status, code) => {
    const old = randomBytes(1000);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'chunked-bad.bin', Body: old }));
    const data = randomBytes(150_000);
    const { headers, body } = await signedChunkedPut('chunked-bad.bin', data, 64 * 1024);
    tamper(body);
    const res = await rawRequest(h.gateway.url(), 'PUT', '/b/chunked-bad.bin', headers, body);
    expect(res.status).toBe(status);
    expect(xmlField(res, 'Code')).toBe(code);
    expect(res.body.toString()).toContain(`<RequestId>${String(res.headers['x-request-id'])}</RequestId>`);
    expect(await h.atOrigin('chunked-bad.bin')).toBe(sha(old));
  });

  it.each([
    ['its final chunk missing', FINAL_CHUNK_BYTES],
    ['its last chunk cut short', FINAL_CHUNK_BYTES + 500],
  ])('refuses a body with %s as IncompleteBody and stores nothing', async (_what, cutBytes) => {
    const data = randomBytes(100_000);
    // The HTTP message itself is whole (its signed Content-Length says so): only the chunk
    // stream inside it ends early.
    const built = await signedChunkedPut('chunked-short.bin', data, 64 * 1024, (n) => n - cutBytes);
    const body = built.body.subarray(0, built.body.length - cutBytes);
    const res = await rawRequest(h.gateway.url(), 'PUT', '/b/chunked-short.bin', built.headers, body);
    expect(res.status).toBe(400);
    expect(xmlField(res, 'Code')).toBe('IncompleteBody');
    expect(await h.atOrigin('chunked-short.bin')).toBe('NoSuchKey');
  });

  it('refuses a body that carries fewer bytes than x-amz-decoded-content-length declares', async () => {
    const data = randomBytes(50_000);
    const { headers, body } = await chunkedUpload(
      h.gateway.url(),
      CLIENT_KEY,
      '/b/chunked-declared.bin',
      data,
      {
        decodedLength: data.length + 10,
      },
    );
    const res = await rawRequest(h.gateway.url(), 'PUT', '/b/chunked-declared.bin', headers, body);
    expect(res.status).toBe(400);
    expect(xmlField(res, 'Code')).toBe('IncompleteBody');
    expect(await h.atOrigin('chunked-declared.bin')).toBe('NoSuchKey');
  });

  it('stores nothing when the client hangs up in the middle of the body', async () => {
    const data = randomBytes(300_000);
    const { headers, body } = await signedChunkedPut('chunked-hangup.bin', data, 64 * 1024);
    const u = new URL(h.gateway.url());
    const closed = new Promise<void>((resolve) => {
      const req = http.request({
        host: u.hostname,
        port: u.port,
        method: 'PUT',
        path: '/b/chunked-hangup.bin',
        headers,
        agent: false,
      });
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      req.write(body.subarray(0, 150_000), () => setImmediate(() => req.destroy()));
    });
    await closed;
    for (let i = 0; i < 200 && h.gateway.inFlight() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(h.gateway.inFlight()).toBe(0);
    expect(await h.atOrigin('chunked-hangup.bin')).toBe('NoSuchKey');
  });

  it('stores nothing and opens no breaker when clients hang up in the middle of plain uploads', async () => {
    const u = new URL(h.gateway.url());
    for (let i = 0; i < 8; i++) {
      const data = randomBytes(300_000);
      const headers = await signedHeaders(
        h.gateway.url(),
        CLIENT_KEY,
        'PUT',
        '/b/plain-hangup.bin',
        { 'content-length': String(data.length) },
        'UNSIGNED-PAYLOAD',
      );
      await new Promise<void>((resolve) => {
        const req = http.request({
          host: u.hostname,
          port: u.port,
          method: 'PUT',
          path: '/b/plain-hangup.bin',
          headers,
          agent: false,
        });
        req.on('error', () => resolve());
        req.on('close', () => resolve());
        req.write(data.subarray(0, 100_000), () => setImmediate(() => req.destroy()));
      });
      for (let j = 0; j < 200 && h.gateway.inFlight() > 0; j++) await new Promise((r) => setTimeout(r, 10));
    }
    expect(await h.atOrigin('plain-hangup.bin')).toBe('NoSuchKey');
    expect(h.gateway.guard.breakerStates().b).toBe('closed');
  });

  it('does not count refused bodies against the origin breaker', async () => {
    for (let i = 0; i < 8; i++) {
      const { headers, body } = await signedChunkedPut('chunked-breaker.bin', randomBytes(70_000), 64 * 1024);
      flip(body, 100);
      expect((await rawRequest(h.gateway.url(), 'PUT', '/b/chunked-breaker.bin', headers, body)).status).toBe(
        403,
      );
    }
    expect(h.gateway.guard.breakerStates().b).toBe('closed');
    // The bucket is still served (its own object: the test does not lean on another one's upload).
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'after-refusals.bin', Body: 'ok' }));
    await h.client.send(new HeadObjectCommand({ Bucket: 'b', Key: 'after-refusals.bin' }));
  });
});

describe('streaming uploads in anonymous mode', () => {
  it('decodes signed chunks it has no key to check, and still refuses a short body', async () => {
    const g = await createGateway({
      upstream: h.origin.url,
      originCredentials: TEST_CREDENTIALS,
      auth: 'anonymous',
      log: () => undefined,
    });
    await g.listen(0);
    try {
      const data = randomBytes(150_000);
      const ok = await signedChunkedPut('anon-chunked.bin', data, 64 * 1024);
      expect((await rawRequest(g.url(), 'PUT', '/b/anon-chunked.bin', ok.headers, ok.body)).status).toBe(200);
      expect(await h.atOrigin('anon-chunked.bin')).toBe(sha(data));
      const short = await signedChunkedPut('anon-short.bin', data, 64 * 1024, (n) => n - FINAL_CHUNK_BYTES);
      const res = await rawRequest(
        g.url(),
        'PUT',
        '/b/anon-short.bin',
        short.headers,
        short.body.subarray(0, short.body.length - FINAL_CHUNK_BYTES),
      );
      expect(xmlField(res, 'Code')).toBe('IncompleteBody');
      expect(await h.atOrigin('anon-short.bin')).toBe('NoSuchKey');
    } finally {
      await g.close(500);
    }
  });
});

describe('signed streaming uploads with a trailer (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER)', () => {
  async function put(
    key: string,
    data: Buffer,
    tamper: { checksum?: string; trailerSignature?: boolean } = {},
  ): Promise<RawAnswer> {
    const { headers, body } = await chunkedUpload(h.gateway.url(), CLIENT_KEY, `/b/${key}`, data, {
      chunkBytes: 70_000,
      trailer: { algorithm: 'crc32', value: tamper.checksum },
      badTrailerSignature: tamper.trailerSignature,
    });
    return rawRequest(h.gateway.url(), 'PUT', `/b/${key}`, headers, body);
  }

  it('stores an upload whose chunks, trailer checksum and trailer signature hold', async () => {
    const data = randomBytes(100_000);
    const res = await put('trailer-signed.bin', data);
    expect(res.status).toBe(200);
    expect(await h.atOrigin('trailer-signed.bin')).toBe(sha(data));
  });

  it('refuses a wrong trailer signature with SignatureDoesNotMatch, storing nothing', async () => {
    const res = await put('trailer-badsig.bin', randomBytes(100_000), { trailerSignature: true });
    expect(res.status).toBe(403);
    expect(xmlField(res, 'Code')).toBe('SignatureDoesNotMatch');
    expect(await h.atOrigin('trailer-badsig.bin')).toBe('NoSuchKey');
  });

  it('refuses a signed trailer whose checksum does not match the body with BadDigest, storing nothing', async () => {
    const res = await put('trailer-baddigest.bin', randomBytes(100_000), { checksum: 'AAAAAA==' });
    expect(res.status).toBe(400);
    expect(xmlField(res, 'Code')).toBe('BadDigest');
    expect(await h.atOrigin('trailer-baddigest.bin')).toBe('NoSuchKey');
  });
});

describe('SDK uploads and payload hashes', () => {
  it('stores an SDK upload of a stream (aws-chunked, STREAMING-UNSIGNED-PAYLOAD-TRAILER with a checksum)', async () => {
    const data = randomBytes(300_000);
    const seen: string[] = [];
    h.client.middlewareStack.add(
      (next) => async (args) => {
        const r = args.request as { headers?: Record<string, string> };
        if (r.headers?.['x-amz-content-sha256']) seen.push(r.headers['x-amz-content-sha256']);
        return next(args);
      },
      { step: 'finalizeRequest', name: 'recordPayloadMode', priority: 'low' },
    );
    try {
      await h.client.send(
        new PutObjectCommand({
          Bucket: 'b',
          Key: 'sdk-stream.bin',
          Body: Readable.from([data]),
          ContentLength: data.length,
        }),
      );
    } finally {
      h.client.middlewareStack.remove('recordPayloadMode');
    }
    expect(seen).toContain('STREAMING-UNSIGNED-PAYLOAD-TRAILER');
    expect(await h.atOrigin('sdk-stream.bin')).toBe(sha(data));
  });

  it.each([
    ['a small', 100_000, true],
    ['a large', 1024 * 1024 + 1, false],
  ])(
    'sends the origin %s streamed body decoded, with its decoded length (and its checksum as a header: %s)',
    async (_what, size, checksumForwarded) => {
      const { recorder, gateway: g } = await startRecordedGateway(h, undefined);
      const client = s3(g.url(), CLIENT_KEY);
      try {
        const data = randomBytes(size);
        await client.send(
          new PutObjectCommand({
            Bucket: 'b',
            Key: 'recorded.bin',
            Body: Readable.from([data]),
            ContentLength: data.length,
            ContentEncoding: 'gzip',
          }),
        );
        const put = recorder.seen.find((r) => r.method === 'PUT');
        expect(sha(put?.body ?? Buffer.alloc(0))).toBe(sha(data));
        expect(put?.headers['content-length']).toBe(String(data.length));
        expect(put?.headers['content-encoding']).toBe('gzip');
        for (const dropped of ['x-amz-trailer', 'x-amz-decoded-content-length', 'expect'])
          expect(put?.headers[dropped]).toBeUndefined();
        // S3 refuses an algorithm named without its checksum: both or neither.
        expect(put?.headers['x-amz-checksum-crc32']).toBe(
          checksumForwarded ? checksumOf('crc32', data) : undefined,
        );
        expect(put?.headers['x-amz-sdk-checksum-algorithm']).toBe(checksumForwarded ? 'CRC32' : undefined);
        expect(put?.headers.authorization).toContain('Credential=S3RVER/');
      } finally {
        client.destroy();
        await g.close(500);
        await recorder.close();
      }
    },
  );

  it('refuses an unsigned streaming upload whose trailer checksum is wrong', async () => {
    const data = Buffer.from('a body with a crc32 trailer');
    const send = async (crc: string) => {
      const { headers, body } = await chunkedUpload(h.gateway.url(), CLIENT_KEY, '/b/trailer.bin', data, {
        signed: false,
        trailer: { algorithm: 'crc32', value: crc },
      });
      return rawRequest(h.gateway.url(), 'PUT', '/b/trailer.bin', headers, body);
    };
    const bad = await send('AAAAAA==');
    expect(bad.status).toBe(400);
    expect(xmlField(bad, 'Code')).toBe('BadDigest');
    expect(await h.atOrigin('trailer.bin')).toBe('NoSuchKey');
    expect((await send(checksumOf('crc32', data))).status).toBe(200);
    expect(await h.atOrigin('trailer.bin')).toBe(sha(data));
  });

  it('refuses a signed body whose sha256 is not its x-amz-content-sha256, and stores a matching one', async () => {
    const old = randomBytes(100);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'hashed.bin', Body: old }));
    const claimed = randomBytes(40_000);
    const sent = Buffer.from(claimed);
    flip(sent, 39_999);
    const headers = await signedHeaders(
      h.gateway.url(),
      CLIENT_KEY,
      'PUT',
      '/b/hashed.bin',
      { 'content-length': String(sent.length) },
      sha(claimed),
    );
    const res = await rawRequest(h.gateway.url(), 'PUT', '/b/hashed.bin', headers, sent);
    expect(res.status).toBe(400);
    expect(xmlField(res, 'Code')).toBe('XAmzContentSHA256Mismatch');
    expect(await h.atOrigin('hashed.bin')).toBe(sha(old));
    await h.client.send(new PutObjectCommand({ Bucket: 'b', Key: 'hashed.bin', Body: claimed }));
    expect(await h.atOrigin('hashed.bin')).toBe(sha(claimed));
  });

  it('accepts UNSIGNED-PAYLOAD, in headers and in a presigned PUT URL', async () => {
    const data = randomBytes(10_000);
    const headers = await signedHeaders(
      h.gateway.url(),
      CLIENT_KEY,
      'PUT',
      '/b/unsigned.bin',
      { 'content-length': String(data.length) },
      'UNSIGNED-PAYLOAD',
    );
    const plain = await rawRequest(h.gateway.url(), 'PUT', '/b/unsigned.bin', headers, data);
    expect(plain.body.toString()).toBe('');
    expect(plain.status).toBe(200);
    expect(await h.atOrigin('unsigned.bin')).toBe(sha(data));
    const presigned = await presign(h.gateway.url(), CLIENT_KEY, 'PUT', '/b/presigned.bin');
    const res = await rawRequest(
      h.gateway.url(),
      'PUT',
      presigned.pathAndQuery,
      { 'content-length': String(data.length) },
      data,
    );
    expect(res.body.toString()).toBe('');
    expect(res.status).toBe(200);
    expect(await h.atOrigin('presigned.bin')).toBe(sha(data));
    // The request line names the URL, never its signature or credential.
    const signature = String(presigned.query['X-Amz-Signature']);
    const line = h.logged.find((l) => l.includes('presigned.bin?'));
    expect(line).toContain('X-Amz-Signature=[REDACTED]');
    expect(h.logged.some((l) => l.includes(signature))).toBe(false);
    expect(h.logged.some((l) => l.includes(CLIENT_KEY.accessKeyId))).toBe(false);
  });
});

/** Flips the low bit of byte `i`. */
function flip(b: Buffer, i: number): void {
  b.writeUInt8(b.readUInt8(i) ^ 1, i);
}

describe('header values beyond ASCII', () => {
  it('verifies a signature over UTF-8 user metadata as the bytes the client signed (as boto3 sends it), and stores it', async () => {
    const value = 'Hello World\u00e9 \u65e5\u672c';
    const body = Buffer.from('abc');
    const headers = await signedHeaders(
      h.gateway.url(),
      CLIENT_KEY,
      'PUT',
      '/b/meta-utf8',
      { 'x-amz-meta-meta1': value },
      undefined,
      body,
    );
    // On the wire as UTF-8 bytes: node:http sends a string one byte per character.
    headers['x-amz-meta-meta1'] = Buffer.from(value, 'utf8').toString('latin1');
    const put = await rawRequest(h.gateway.url(), 'PUT', '/b/meta-utf8', headers, body);
    expect(put.status).toBe(200);
    // Read back through the gateway (a miss, then from the cache): the same bytes.
    for (let i = 0; i < 2; i++) {
      const head = await rawRequest(
        h.gateway.url(),
        'HEAD',
        '/b/meta-utf8',
        await signedHeaders(h.gateway.url(), CLIENT_KEY, 'HEAD', '/b/meta-utf8'),
      );
      expect(head.status).toBe(200);
      expect(Buffer.from(String(head.headers['x-amz-meta-meta1']), 'latin1').toString('utf8')).toBe(value);
    }
  });
});

describe('requests without a signature in gateway auth', () => {
  it('are refused with 403 AccessDenied by default, before anything reaches the origin', async () => {
    const { recorder, gateway: g } = await startRecordedGateway(h, 'unsigned-refused');
    try {
      const a = await rawRequest(g.url(), 'GET', '/b/anything');
      expect(a.status).toBe(403);
      expect(xmlField(a, 'Code')).toBe('AccessDenied');
      expect(a.headers['x-keel-cache']).toBe('DENIED');
      expect(recorder.seen).toHaveLength(0);
    } finally {
      await g.close(500);
      await recorder.close();
    }
  });

  it('with unsignedRequests forward, reach the origin unsigned for it to judge, and are never answered from the cache', async () => {
    const data = randomBytes(5000);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'public.bin', Body: data }));
    const { recorder, gateway: g } = await startRecordedGateway(h, 'unsigned-forwarded', {
      unsignedRequests: 'forward',
    });
    try {
      // Cached through a signed read first.
      const signed = await rawRequest(
        g.url(),
        'GET',
        '/b/public.bin',
        await signedHeaders(g.url(), CLIENT_KEY, 'GET', '/b/public.bin'),
      );
      expect(signed.headers['x-keel-cache']).toBe('MISS');
      await g.idle();
      const before = recorder.seen.length;
      const anonymous = await rawRequest(g.url(), 'GET', '/b/public.bin');
      expect(anonymous.status).toBe(200);
      expect(sha(anonymous.body)).toBe(sha(data));
      expect(anonymous.headers['x-keel-cache']).toBe('PASS');
      const asked = recorder.seen.slice(before);
      expect(asked).toHaveLength(1);
      expect(asked[0]?.headers.authorization).toBeUndefined();
      expect(asked[0]?.headers['x-amz-date']).toBeUndefined();
      // A forged signature is still checked by the gateway, and refused.
      const forged = await rawRequest(g.url(), 'GET', '/b/public.bin', {
        ...(await signedHeaders(
          g.url(),
          { ...CLIENT_KEY, secretAccessKey: 'wrong' },
          'GET',
          '/b/public.bin',
        )),
      });
      expect(forged.status).toBe(403);
      expect(xmlField(forged, 'Code')).toBe('SignatureDoesNotMatch');
    } finally {
      await g.close(500);
      await recorder.close();
    }
  });
});
