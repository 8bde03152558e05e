import { describe, expect, it } from 'vitest';
import { decodeAwsChunked } from './aws-chunked.js';
import { evaluateConditions } from './conditional.js';
import { evaluateRange } from './range.js';
import { s3ErrorXml, S3Errors } from './s3-error.js';
import { parseS3Target, type S3Target } from './s3-request.js';
import { deleteObjectsKeys, invalidatedBy, isDeleteObjects } from './write-invalidation.js';
import { canonicalRequest, sigv4Signature, verifySigV4 } from './sigv4-verify.js';

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
