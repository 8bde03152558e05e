import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BodyRejectedError, chunkSignature, decodeAwsChunked } from './auth/aws-chunked.js';
import { withoutPresignParams } from './write/passthrough.js';
import { verifyPayloadSha256 } from './auth/payload-verify.js';
import { evaluateConditions } from './read/conditional.js';
import { evaluateRange } from './read/range.js';
import { s3ErrorXml, S3Errors } from './s3/s3-error.js';
import { parseS3Target, type S3Target } from './s3/s3-request.js';
import {
  deleteObjectsKeys,
  invalidatedBy,
  isDeleteObjects,
  postObjectKey,
} from './write/write-invalidation.js';
import { canonicalRequest, sigv4Signature, verifySigV4 } from './auth/sigv4-verify.js';

describe('evaluateRange', () => {
  it.each([
    [undefined, 100, { kind: 'full' }],
    ['bytes=0-9', 100, { kind: 'partial', start: 0, end: 9 }],
    ['bytes=90-', 100, { kind: 'partial', start: 90, end: 99 }],
    ['bytes=-10', 100, { kind: 'partial', start: 90, end: 99 }],
    ['bytes=-1000', 100, { kind: 'partial', start: 0, end: 99 }],
    ['bytes=50-5000', 100, { kind: 'partial', start: 50, end: 99 }],
    ['bytes=100-', 100, { kind: 'unsatisfiable' }],
    ['bytes=100-200', 100, { kind: 'unsatisfiable' }],
    ['bytes=-0', 100, { kind: 'unsatisfiable' }],
    ['bytes=0-0', 0, { kind: 'unsatisfiable' }],
    ['bytes=9-1', 100, { kind: 'full' }],
    ['bytes=0-1,5-6', 100, { kind: 'full' }],
    ['items=0-1', 100, { kind: 'full' }],
    ['bytes=-', 100, { kind: 'full' }],
    ['bytes=abc', 100, { kind: 'full' }],
  ] as const)('Range %s on %i bytes is %o', (header, size, expected) => {
    expect(evaluateRange(header, size)).toEqual(expected);
  });
});

describe('evaluateConditions', () => {
  const obj = { etag: '"abc"', lastModified: 'Wed, 01 Jan 2025 00:00:00 GMT' };
  const before = 'Tue, 31 Dec 2024 00:00:00 GMT';
  const after = 'Thu, 02 Jan 2025 00:00:00 GMT';
  it.each([
    [{}, 'proceed'],
    [{ 'if-match': '"abc"' }, 'proceed'],
    [{ 'if-match': '*' }, 'proceed'],
    [{ 'if-match': '"x", "abc"' }, 'proceed'],
    [{ 'if-match': '"x"' }, 'precondition-failed'],
    [{ 'if-match': '"abc"', 'if-unmodified-since': before }, 'proceed'],
    [{ 'if-unmodified-since': before }, 'precondition-failed'],
    [{ 'if-unmodified-since': after }, 'proceed'],
    [{ 'if-none-match': '"abc"' }, 'not-modified'],
    [{ 'if-none-match': '"x"' }, 'proceed'],
    [{ 'if-none-match': '"x"', 'if-modified-since': after }, 'proceed'],
    [{ 'if-modified-since': after }, 'not-modified'],
    [{ 'if-modified-since': before }, 'proceed'],
    [{ 'if-modified-since': 'garbage' }, 'proceed'],
    [{ 'if-match': '"x"', 'if-none-match': '"abc"' }, 'precondition-failed'],
  ] as const)('%o → %s', (headers, expected) => {
    expect(evaluateConditions(headers, obj)).toBe(expected);
  });
});

describe('parseS3Target', () => {
  it.each([
    ['/b/k', undefined, undefined, { bucket: 'b', key: 'k', style: 'path' }],
    ['/b/dir/a%20b%2Bc', undefined, undefined, { bucket: 'b', key: 'dir/a b+c', style: 'path' }],
    ['/b', undefined, undefined, { bucket: 'b', key: undefined }],
    ['/b/', undefined, undefined, { bucket: 'b', key: undefined }],
    ['/', undefined, undefined, { bucket: undefined, key: undefined }],
    [
      '/k/x?versionId=3',
      'bkt.s3.local:8080',
      's3.local',
      { bucket: 'bkt', key: 'k/x', style: 'virtual-host' },
    ],
    ['/', 'bkt.s3.local', 's3.local', { bucket: 'bkt', key: undefined, style: 'virtual-host' }],
    ['/b/k', 'localhost:8080', 's3.local', { bucket: 'b', key: 'k', style: 'path' }],
  ] as const)('%s (Host %s) addresses %o', (url, host, base, expected) => {
    expect(parseS3Target(url, host, base)).toMatchObject(expected);
  });
  it.each(['/b/%E0%A4%A', '/b%zz/k', '/bad bucket/k', 'b/k'])('%s is malformed', (url) => {
    expect(parseS3Target(url, undefined, undefined)).toMatchObject({ malformed: true });
  });
});

describe('S3 error XML', () => {
  it('escapes and carries the request id and extra fields', () => {
    const xml = s3ErrorXml({ ...S3Errors.invalidRange(10), resource: '/b/<k>&' }, 'RID');
    expect(xml).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRange</Code><Message>The requested range is not satisfiable</Message><Resource>/b/&lt;k&gt;&amp;</Resource><ActualObjectSize>10</ActualObjectSize><RequestId>RID</RequestId></Error>',
    );
  });
});

describe('aws-chunked decoding', () => {
  it('yields the payload whatever the chunk boundaries', async () => {
    const payload = Buffer.from('hello world, this is keel');
    const encoded = Buffer.from(
      `a;chunk-signature=${'0'.repeat(64)}\r\n${payload.subarray(0, 10).toString()}\r\n${(payload.length - 10).toString(16)};chunk-signature=x\r\n${payload.subarray(10).toString()}\r\n0;chunk-signature=y\r\nx-amz-checksum-crc32:AAAA\r\n\r\n`,
    );
    for (const step of [1, 3, 7, encoded.length]) {
      const t = decodeAwsChunked();
      const out: Buffer[] = [];
      t.on('data', (d: Buffer) => out.push(d));
      const done = new Promise((r) => t.on('end', r));
      for (let i = 0; i < encoded.length; i += step) t.write(encoded.subarray(i, i + step));
      t.end();
      await done;
      expect(Buffer.concat(out).toString()).toBe(payload.toString());
    }
  });
});

describe('verifySigV4', () => {
  // The example of AWS's SigV4 documentation for S3 (GET /test.txt with a Range).
  const keys = new Map([['AKIAIOSFODNN7EXAMPLE', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY']]);
  const headers = {
    host: 'examplebucket.s3.amazonaws.com',
    range: 'bytes=0-9',
    'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'x-amz-date': '20130524T000000Z',
    authorization:
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
  };
  const now = Date.UTC(2013, 4, 24, 0, 5);
  it('accepts the AWS documentation example', () => {
    expect(verifySigV4('GET', '/test.txt', headers, keys, now)).toMatchObject({
      ok: true,
      accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
    });
  });
  it.each([
    ['a changed header', { ...headers, range: 'bytes=0-10' }, 'SignatureDoesNotMatch'],
    [
      'an unknown key',
      { ...headers, authorization: headers.authorization.replace('AKIAIOSFODNN7EXAMPLE', 'AKIAOTHER') },
      'InvalidAccessKeyId',
    ],
    ['no signature', { host: 'x' }, 'AccessDenied'],
    ['a malformed header', { ...headers, authorization: 'AWS abc:def' }, 'AuthorizationHeaderMalformed'],
  ])('rejects %s', (_what, h, code) => {
    const r = verifySigV4('GET', '/test.txt', h, keys, now);
    expect(r.ok ? 'ok' : r.error.code).toBe(code);
  });
  it('rejects a request signed too long ago', () => {
    const r = verifySigV4('GET', '/test.txt', headers, keys, now + 3600_000);
    expect(r.ok ? 'ok' : r.error.code).toBe('RequestTimeTooSkewed');
  });
  it('verifies a presigned URL and rejects it once expired', () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    const cred = encodeURIComponent('AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request');
    const url = `/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${cred}&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host`;
    const h = { host: 'examplebucket.s3.amazonaws.com' };
    const sig = sigv4Signature(
      secret,
      '20130524T000000Z',
      '20130524/us-east-1/s3/aws4_request',
      canonicalRequest('GET', url, h, ['host'], 'UNSIGNED-PAYLOAD', undefined),
    );
    // The documented presigned example's signature.
    expect(sig).toBe('aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404');
    expect(verifySigV4('GET', `${url}&X-Amz-Signature=${sig}`, h, keys, now).ok).toBe(true);
    const late = verifySigV4('GET', `${url}&X-Amz-Signature=${sig}`, h, keys, now + 2 * 86400_000);
    expect(late.ok ? 'ok' : late.error.message).toBe('Request has expired');
  });
});

describe('write invalidation', () => {
  const t = (url: string) => parseS3Target(url, undefined, undefined) as S3Target;
  it.each([
    ['PUT', '/b/k', [{ bucket: 'b', key: 'k', versionId: null }]],
    ['DELETE', '/b/k', [{ bucket: 'b', key: 'k', versionId: null }]],
    [
      'DELETE',
      '/b/k?versionId=v1',
      [
        { bucket: 'b', key: 'k', versionId: null },
        { bucket: 'b', key: 'k', versionId: 'v1' },
      ],
    ],
    ['POST', '/b/k?uploadId=u', [{ bucket: 'b', key: 'k', versionId: null }]],
    ['PUT', '/b/k?tagging', [{ bucket: 'b', key: 'k', versionId: null }]],
    ['POST', '/b/k?uploads', []],
    ['PUT', '/b/k?partNumber=1&uploadId=u', []],
    ['DELETE', '/b/k?uploadId=u', []],
    ['POST', '/b/k?select&select-type=2', []],
    ['GET', '/b/k', []],
    ['PUT', '/b', []],
  ] as const)('%s %s drops %o', (method, url, expected) => {
    expect(invalidatedBy(method, t(url))).toEqual(expected);
  });

  it('finds every key (and version) of a DeleteObjects body, entities decoded', () => {
    const body = Buffer.from(
      '<?xml version="1.0"?><Delete><Quiet>true</Quiet><Object><Key>a&amp;b &lt;c&gt;</Key></Object><Object><Key> spaced </Key><VersionId>v9</VersionId></Object></Delete>',
    );
    expect(deleteObjectsKeys(body)).toEqual([
      { key: 'a&b <c>', versionId: undefined },
      { key: ' spaced ', versionId: 'v9' },
    ]);
    expect(invalidatedBy('POST', t('/b?delete'), deleteObjectsKeys(body))).toHaveLength(3);
    expect(deleteObjectsKeys(Buffer.from('<Delete><Object><Key>only</Key></Object></Delete>'))).toEqual([
      { key: 'only', versionId: undefined },
    ]);
    expect(deleteObjectsKeys(Buffer.from('not xml <'))).toEqual([]);
    expect(isDeleteObjects('POST', t('/b?delete'))).toBe(true);
    expect(isDeleteObjects('POST', t('/b/k?delete'))).toBe(false);
  });
});

describe('aws-chunked chunk signatures', () => {
  // AWS's SigV4 streaming example: PUT /examplebucket/chunkObject.txt, 66560 bytes of 'a' in a
  // 65536-byte chunk and a 1024-byte chunk.
  const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  const scope = '20130524/us-east-1/s3/aws4_request';
  const seed = '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9';
  const documented = [
    'ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648',
    '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497',
    'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9',
  ];
  const headers = {
    host: 's3.amazonaws.com',
    'x-amz-date': '20130524T000000Z',
    'x-amz-storage-class': 'REDUCED_REDUNDANCY',
    'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
    'content-encoding': 'aws-chunked',
    'x-amz-decoded-content-length': '66560',
    'content-length': '66824',
    authorization: `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/${scope},SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=${seed}`,
  };
  const keys = new Map([['AKIAIOSFODNN7EXAMPLE', secret]]);
  const now = Date.UTC(2013, 4, 24, 0, 1);
  const chunks = [Buffer.alloc(65536, 'a'), Buffer.alloc(1024, 'a'), Buffer.alloc(0)];

  function encode(sigs: string[], data = chunks): Buffer {
    return Buffer.concat(
      data.flatMap((c, i) => [
        Buffer.from(`${c.length.toString(16)};chunk-signature=${sigs[i] ?? ''}\r\n`),
        c,
        Buffer.from('\r\n'),
      ]),
    );
  }

  async function decode(body: Buffer, step: number, options: Parameters<typeof decodeAwsChunked>[0]) {
    const t = decodeAwsChunked(options);
    const out: Buffer[] = [];
    t.on('data', (d: Buffer) => out.push(d));
    const done = new Promise<Buffer>((resolve, reject) => {
      t.on('end', () => resolve(Buffer.concat(out)));
      t.on('error', reject);
    });
    for (let i = 0; i < body.length && !t.destroyed; i += step) t.write(body.subarray(i, i + step));
    t.end();
    return done;
  }

  it('verifies the seed signature of the documented request and chains the documented chunk signatures', async () => {
    const auth = verifySigV4('PUT', '/examplebucket/chunkObject.txt', headers, keys, now);
    expect(auth.ok).toBe(true);
    if (!auth.ok) return;
    let previous = auth.signing.seedSignature;
    for (const [i, c] of chunks.entries()) {
      const sig = chunkSignature(auth.signing, previous, createHash('sha256').update(c).digest('hex'));
      expect(sig).toBe(documented[i]);
      previous = sig;
    }
    const body = encode(documented);
    expect(body.length).toBe(66824);
    for (const step of [body.length, 4096, 1000]) {
      const out = await decode(body, step, { signing: auth.signing, decodedLength: 66560 });
      expect(out.equals(Buffer.alloc(66560, 'a'))).toBe(true);
    }
  });

  it.each([
    ['a flipped data byte', (b: Buffer) => flip(b, 66000), 'SignatureDoesNotMatch'],
    ['a changed final signature', (b: Buffer) => flip(b, b.length - 10), 'SignatureDoesNotMatch'],
  ])('refuses %s', async (_what, tamper, code) => {
    const auth = verifySigV4('PUT', '/examplebucket/chunkObject.txt', headers, keys, now);
    if (!auth.ok) throw new Error('seed');
    const body = encode(documented);
    tamper(body);
    await expect(decode(body, 4096, { signing: auth.signing, decodedLength: 66560 })).rejects.toMatchObject({
      s3: { code },
    });
  });

  it('releases no byte of a chunk before its signature is checked, and holds the last one until the end', async () => {
    const auth = verifySigV4('PUT', '/examplebucket/chunkObject.txt', headers, keys, now);
    if (!auth.ok) throw new Error('seed');
    const body = encode(documented);
    flip(body, 66000); // in the second chunk
    const t = decodeAwsChunked({ signing: auth.signing, decodedLength: 66560 });
    let released = 0;
    t.on('data', (d: Buffer) => (released += d.length));
    t.on('error', () => undefined);
    t.write(body);
    await new Promise((r) => setImmediate(r));
    // The first (good) chunk is held back while the next is unchecked; the bad one never goes.
    expect(released).toBe(0);
  });

  it.each([
    ['no final chunk', (b: Buffer) => b.subarray(0, b.length - 86), 'IncompleteBody'],
    ['a short last chunk', (b: Buffer) => Buffer.concat([b.subarray(0, 65626 + 86 + 10)]), 'IncompleteBody'],
  ])('refuses a body with %s', async (_what, cut, code) => {
    const auth = verifySigV4('PUT', '/examplebucket/chunkObject.txt', headers, keys, now);
    if (!auth.ok) throw new Error('seed');
    await expect(
      decode(cut(encode(documented)), 4096, { signing: auth.signing, decodedLength: 66560 }),
    ).rejects.toMatchObject({ s3: { code } });
  });

  it('checks the declared decoded length and a crc32 trailer of an unsigned streaming body', async () => {
    const data = Buffer.from('hello, trailer');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(data));
    const body = (checksum: string) =>
      Buffer.from(
        `${data.length.toString(16)}\r\n${data.toString()}\r\n0\r\nx-amz-checksum-crc32:${checksum}\r\n\r\n`,
      );
    const opts = { decodedLength: data.length, trailer: 'x-amz-checksum-crc32' };
    expect((await decode(body(crc.toString('base64')), 3, opts)).toString()).toBe(data.toString());
    await expect(decode(body('AAAAAA=='), 3, opts)).rejects.toMatchObject({ s3: { code: 'BadDigest' } });
    await expect(decode(body(crc.toString('base64')), 3, { decodedLength: 99 })).rejects.toMatchObject({
      s3: { code: 'IncompleteBody' },
    });
    await expect(decode(body(crc.toString('base64')), 3, { decodedLength: 3 })).rejects.toMatchObject({
      s3: { code: 'IncompleteBody' },
    });
  });
});

describe('payload sha256 verification', () => {
  it('passes a body whose sha256 matches and refuses one that does not, holding back its end', async () => {
    const data = Buffer.from('the body');
    const good = createHash('sha256').update(data).digest('hex');
    const run = async (hex: string) => {
      const t = verifyPayloadSha256(hex);
      const out: Buffer[] = [];
      t.on('data', (d: Buffer) => out.push(d));
      const done = new Promise<Buffer>((resolve, reject) => {
        t.on('end', () => resolve(Buffer.concat(out)));
        t.on('error', (e) => reject(e));
      });
      t.write(data.subarray(0, 3));
      t.write(data.subarray(3));
      t.end();
      return { done, out };
    };
    expect((await (await run(good)).done).toString()).toBe('the body');
    const bad = await run('0'.repeat(64));
    await expect(bad.done).rejects.toMatchObject({ s3: { code: 'XAmzContentSHA256Mismatch' } });
    expect(Buffer.concat(bad.out).length).toBeLessThan(data.length);
  });
});

describe('withoutPresignParams', () => {
  it.each([
    ['', ''],
    ['uploads', 'uploads'],
    ['partNumber=1&uploadId=a%2Bb', 'partNumber=1&uploadId=a%2Bb'],
    [
      'X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=K%2F1&response-content-type=a%2Fb&X-Amz-Signature=ab&X-Amz-SignedHeaders=host&X-Amz-Date=1&X-Amz-Expires=9&x-id=GetObject',
      'response-content-type=a%2Fb&x-id=GetObject',
    ],
    ['X-Amz-Security-Token=t&versionId=3', 'versionId=3'],
  ])('%s → %s', (raw, expected) => {
    expect(withoutPresignParams(raw)).toBe(expected);
  });
});

/** Flips the low bit of byte `i`. */
function flip(b: Buffer, i: number): void {
  b.writeUInt8(b.readUInt8(i) ^ 1, i);
}

describe('postObjectKey', () => {
  it.each([
    ['http://127.0.0.1:9000/b/dir/a%20b%2Bc.bin', 'dir/a b+c.bin'],
    ['https://b.s3.amazonaws.com/dir/k%C3%BC.bin', 'dir/kü.bin'],
    ['http://example.invalid/done?bucket=b&key=dir%2Fx+y.bin&etag=%22e%22', 'dir/x y.bin'],
    ['http://127.0.0.1:9000/other/k', undefined],
    ['http://example.invalid/done?bucket=other&key=k', undefined],
    [undefined, undefined],
    ['http://127.0.0.1:9000/b/', undefined],
  ])('Location %s names key %s of bucket b', (location, key) => {
    expect(postObjectKey('b', location)).toBe(key);
  });
});

describe('aws-chunked decoding (properties)', () => {
  async function feed(body: Buffer, cuts: number[], options: Parameters<typeof decodeAwsChunked>[0] = {}) {
    const t = decodeAwsChunked(options);
    const out: Buffer[] = [];
    t.on('data', (d: Buffer) => out.push(d));
    const done = new Promise<{ ok: true; data: Buffer } | { ok: false; error: unknown }>((resolve) => {
      t.on('end', () => resolve({ ok: true, data: Buffer.concat(out) }));
      t.on('error', (error) => resolve({ ok: false, error }));
    });
    let at = 0;
    for (const c of [...cuts.filter((n) => n < body.length).sort((a, b) => a - b), body.length]) {
      if (t.destroyed) break;
      if (c > at) t.write(body.subarray(at, c));
      at = Math.max(at, c);
    }
    if (!t.destroyed) t.end();
    return done;
  }

  it('decodes any payload, chunked any way and delivered in any pieces, to itself', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 3000 }),
        fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat({ max: 4000 }), { maxLength: 10 }),
        async (payload, sizes, cuts) => {
          const data = Buffer.from(payload);
          const frames: Buffer[] = [];
          for (let i = 0, k = 0; i < data.length; k++) {
            const c = data.subarray(i, i + (sizes[k % sizes.length] ?? 1));
            frames.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
            i += c.length;
          }
          frames.push(Buffer.from('0\r\n\r\n'));
          const got = await feed(Buffer.concat(frames), cuts, { decodedLength: data.length });
          expect(got.ok && got.data.equals(data)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('answers any byte string with a payload or a BodyRejectedError, never a crash or a hang', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
          fc
            .array(fc.constantFrom('0', '1', 'a', 'f', ';', '=', '\r\n', 'x', ':', 'chunk-signature='), {
              maxLength: 60,
            })
            .map((p) => Buffer.from(p.join(''))),
        ),
        fc.array(fc.nat({ max: 300 }), { maxLength: 5 }),
        async (body, cuts) => {
          const got = await feed(body, cuts, { decodedLength: 3 });
          if (!got.ok) expect(got.error).toBeInstanceOf(BodyRejectedError);
          else expect(got.data.length).toBe(3);
        },
      ),
      { numRuns: 300 },
    );
  });
});
