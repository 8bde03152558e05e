/**
 * The gateway answers as its origin does. Each case is asked of s3rver directly and of the
 * gateway twice (a miss, then from the cache), and the answers compared: status, the headers a
 * client relies on, and the body's sha256. Where s3rver departs from S3 the test holds the
 * gateway to S3's documented behaviour and says so (see KNOWN_ORIGIN_DEPARTURES).
 */
import { randomBytes } from 'node:crypto';
import {
  GetObjectCommand,
  ListObjectsV2Command,
  PutBucketCorsCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateway, type Gateway } from '@keel/gateway';
import {
  bodyOf,
  CLIENT_KEY,
  expectS3Error,
  gatewayOptions,
  rawRequest,
  sha,
  signedRequest,
  SLICE,
  snapshot,
  startHarness,
  TEST_CREDENTIALS,
  xmlField,
  type Harness,
  type RawAnswer,
} from './gateway-protocol-support.js';
import { presign as presignUrl, signedHeaders } from './gateway-sign-support.js';

let h: Harness;
const SIZE = SLICE * 3 + 1234;
const data = randomBytes(SIZE);
let lastModified = '';
let etag = '';

const KEYS = [
  'dir/with space.bin',
  'ünïcödé/ключ 日本.txt',
  'a+b=c&d.txt',
  "odd !'()*~.txt",
  'percent%20literal.txt',
];

beforeAll(async () => {
  h = await startHarness();
  await h.direct.send(
    new PutObjectCommand({
      Bucket: 'b',
      Key: 'obj.bin',
      Body: data,
      ContentType: 'application/x-keel-test',
      Metadata: { owner: 'keel', note: 'protocol' },
    }),
  );
  for (const k of KEYS)
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: k, Body: Buffer.from(k) }));
  const head = await rawRequest(h.origin.url, 'HEAD', '/b/obj.bin');
  lastModified = String(head.headers['last-modified']);
  etag = String(head.headers.etag);
});
afterAll(async () => {
  await h.close();
});

/** Headers whose values must be the same as the origin's. */
const COMPARED = [
  'etag',
  'content-length',
  'content-range',
  'content-type',
  'last-modified',
  'x-amz-meta-owner',
  'x-amz-meta-note',
];

function view(a: RawAnswer, method: string): Record<string, unknown> {
  // s3rver's 304 carries no object headers (S3's carries ETag and Last-Modified): compare the status.
  if (a.status === 304) return { status: 304, body: a.body.length };
  return {
    status: a.status,
    ...Object.fromEntries(COMPARED.map((k) => [k, a.headers[k]])),
    body: method === 'HEAD' || a.status >= 300 ? a.body.length : sha(a.body),
  };
}

const gw = (method: string, p: string, headers: Record<string, string> = {}): Promise<RawAnswer> =>
  signedRequest(h.gateway.url(), CLIENT_KEY, method, p, headers);
const og = (method: string, p: string, headers: Record<string, string> = {}): Promise<RawAnswer> =>
  signedRequest(h.origin.url, TEST_CREDENTIALS, method, p, headers);

/** Asks the origin once and the gateway twice (a miss, then with the cache filled). */
async function compare(method: string, p: string, headers: Record<string, string> = {}): Promise<RawAnswer> {
  const direct = await og(method, p, headers);
  const first = await gw(method, p, headers);
  await h.gateway.idle();
  const second = await gw(method, p, headers);
  expect(view(first, method)).toEqual(view(direct, method));
  expect(view(second, method)).toEqual(view(direct, method));
  return second;
}

describe('ranges, as the origin answers them', () => {
  it.each([
    ['bytes=0-99'],
    ['bytes=65530-65545'],
    ['bytes=100000-'],
    ['bytes=150000-99999999'],
    [`bytes=0-${SIZE - 1}`],
    [`bytes=${SIZE - 1}-`],
  ])('GET with Range %s', async (range) => {
    const a = await compare('GET', '/b/obj.bin', { range });
    expect(a.status).toBe(206);
  });

  it.each([['bytes=0-99'], ['bytes=100000-']])('HEAD with Range %s', async (range) => {
    await compare('HEAD', '/b/obj.bin', { range });
  });

  it('GET and HEAD without a range', async () => {
    expect((await compare('GET', '/b/obj.bin')).status).toBe(200);
    const head = await compare('HEAD', '/b/obj.bin');
    expect(head.headers['accept-ranges']).toBe('bytes');
  });

  it('a suffix range bytes=-n is the last n bytes (S3; s3rver serves the first n)', async () => {
    const a = await gw('GET', '/b/obj.bin', { range: 'bytes=-500' });
    expect(a.status).toBe(206);
    expect(a.headers['content-range']).toBe(`bytes ${SIZE - 500}-${SIZE - 1}/${SIZE}`);
    expect(sha(a.body)).toBe(sha(data.subarray(SIZE - 500)));
    const whole = await gw('GET', '/b/obj.bin', { range: `bytes=-${SIZE + 10}` });
    expect(whole.headers['content-range']).toBe(`bytes 0-${SIZE - 1}/${SIZE}`);
    expect(sha(whole.body)).toBe(sha(data));
  });

  it('an unsatisfiable range is 416 InvalidRange with Content-Range bytes */size, like the origin', async () => {
    for (const range of [`bytes=${SIZE}-`, `bytes=${SIZE + 5}-${SIZE + 10}`]) {
      const direct = await og('GET', '/b/obj.bin', { range });
      expect(direct.status).toBe(416);
      expect(xmlField(direct, 'Code')).toBe('InvalidRange');
      const a = await gw('GET', '/b/obj.bin', { range });
      expectS3Error(a, 416, 'InvalidRange');
      expect(a.headers['content-range']).toBe(`bytes */${SIZE}`);
      expect(xmlField(a, 'ActualObjectSize')).toBe(String(SIZE));
    }
  });

  it.each([['bytes=0-1,5-6'], ['bytes=5-1'], ['items=0-9'], ['bytes=abc']])(
    'a Range S3 does not serve (%s) is ignored: the whole object, 200',
    async (range) => {
      const a = await gw('GET', '/b/obj.bin', { range });
      expect(a.status).toBe(200);
      expect(a.headers['content-range']).toBeUndefined();
      expect(sha(a.body)).toBe(sha(data));
    },
  );
});

describe('conditional requests', () => {
  const past = 'Mon, 01 Jan 2001 00:00:00 GMT';
  const future = 'Fri, 01 Jan 2100 00:00:00 GMT';

  it('If-Match with the ETag serves the object; another ETag is 412 PreconditionFailed', async () => {
    expect((await compare('GET', '/b/obj.bin', { 'if-match': etag })).status).toBe(200);
    const direct = await og('GET', '/b/obj.bin', { 'if-match': '"0123"' });
    expect(direct.status).toBe(412);
    expectS3Error(await gw('GET', '/b/obj.bin', { 'if-match': '"0123"' }), 412, 'PreconditionFailed');
  });

  it('If-None-Match with the ETag is 304 without a body; another ETag serves the object', async () => {
    const a = await compare('GET', '/b/obj.bin', { 'if-none-match': etag });
    expect(a.status).toBe(304);
    expect(a.body.length).toBe(0);
    expect(a.headers.etag).toBe(etag);
    expect((await compare('GET', '/b/obj.bin', { 'if-none-match': '"0123"' })).status).toBe(200);
  });

  it('If-Modified-Since: 304 when not modified since, the object when modified', async () => {
    expect((await compare('GET', '/b/obj.bin', { 'if-modified-since': future })).status).toBe(304);
    expect((await compare('GET', '/b/obj.bin', { 'if-modified-since': lastModified })).status).toBe(304);
    expect((await compare('GET', '/b/obj.bin', { 'if-modified-since': past })).status).toBe(200);
  });

  it('If-Unmodified-Since: 412 when modified since (S3; s3rver ignores the header), the object otherwise', async () => {
    expectS3Error(await gw('GET', '/b/obj.bin', { 'if-unmodified-since': past }), 412, 'PreconditionFailed');
    expect((await compare('GET', '/b/obj.bin', { 'if-unmodified-since': future })).status).toBe(200);
  });

  it('HEAD with a failing condition answers the status without a body', async () => {
    const a = await gw('HEAD', '/b/obj.bin', { 'if-match': '"0123"' });
    expect(a.status).toBe(412);
    expect(a.body.length).toBe(0);
    expect((await gw('HEAD', '/b/obj.bin', { 'if-none-match': etag })).status).toBe(304);
  });
});

describe('other reads', () => {
  it('response-* overrides are passed to the origin and answered as it answers', async () => {
    const a = await compare(
      'GET',
      '/b/obj.bin?response-content-type=text%2Fplain&response-cache-control=no-cache',
    );
    expect(a.headers['content-type']).toBe('text/plain');
    expect(a.headers['cache-control']).toBe('no-cache');
  });

  it('If-None-Match: * is 304 for an object that exists', async () => {
    expect((await compare('GET', '/b/obj.bin', { 'if-none-match': '*' })).status).toBe(304);
  });

  it('HEAD of a missing object is 404 without a body', async () => {
    const a = await compare('HEAD', '/b/absent.bin');
    expect(a.status).toBe(404);
    expect(a.body.length).toBe(0);
  });

  it('a key with a .. segment is a key like any other, not a path to resolve', async () => {
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'x/../dots.txt', Body: 'dots' }));
    const a = await compare('GET', '/b/x/../dots.txt');
    expect(a.body.toString()).toBe('dots');
    // The gateway caches it by its key, never by a resolved path.
    expect(await h.gateway.cache?.getMeta({ bucket: 'b', key: 'x/../dots.txt' })).toBeDefined();
  });
});

describe('partNumber and versionId', () => {
  it('partNumber is passed to the origin and answered as it answers', async () => {
    await compare('GET', '/b/obj.bin?partNumber=1');
    await compare('HEAD', '/b/obj.bin?partNumber=1');
  });

  it('a versionId read is cached apart from the current version', async () => {
    await compare('GET', '/b/obj.bin?versionId=v-111', { range: 'bytes=0-9' });
    const versioned = await h.gateway.cache?.getMeta({ bucket: 'b', key: 'obj.bin', versionId: 'v-111' });
    expect(versioned?.identity.versionId).toBe('v-111');
    expect(versioned?.slices.map((s) => s.index)).toEqual([0]);
    const current = await h.gateway.cache?.getMeta({ bucket: 'b', key: 'obj.bin', versionId: null });
    expect(current?.identity.versionId ?? null).toBeNull();
  });
});

describe('keys and addressing', () => {
  it.each(KEYS)('key %j reads byte-identical through the SDK and raw', async (key) => {
    const got = await h.client.send(new GetObjectCommand({ Bucket: 'b', Key: key }));
    expect((await bodyOf(got)).toString()).toBe(key);
    const encoded = key
      .split('/')
      .map((s) =>
        encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
      )
      .join('/');
    await compare('GET', `/b/${encoded}`);
  });

  it.each(['dir/with ', 'ünïcödé/', 'a+b', "odd !'()*"])(
    'ListObjectsV2 with prefix %j lists what the origin lists',
    async (Prefix) => {
      const via = await h.client.send(new ListObjectsV2Command({ Bucket: 'b', Prefix }));
      const direct = await h.direct.send(new ListObjectsV2Command({ Bucket: 'b', Prefix }));
      expect(via.Contents?.map((c) => [c.Key, c.ETag, c.Size])).toEqual(
        direct.Contents?.map((c) => [c.Key, c.ETag, c.Size]),
      );
      expect(via.Contents?.length).toBe(1);
    },
  );

  it('a literal + in a path is a plus, not a space', async () => {
    const a = await gw('GET', '/b/a+b=c&d.txt');
    expect(a.status).toBe(200);
    expect(a.body.toString()).toBe('a+b=c&d.txt');
  });

  it('virtual-host-style requests answer as path-style ones', async () => {
    const g: Gateway = await createGateway(
      gatewayOptions(h.origin.url, {
        cacheDir: `${h.cacheDir}-vhost`,
        sliceBytes: SLICE,
        baseDomain: 's3.keel.test',
      }),
    );
    const { port } = await g.listen(0);
    try {
      const vhost = `http://b.s3.keel.test:${port}`;
      for (const range of [undefined, 'bytes=10-70000']) {
        const extra = range ? { range } : {};
        const headers = await signedHeaders(vhost, CLIENT_KEY, 'GET', '/obj.bin', extra);
        const a = await rawRequest(g.url(), 'GET', '/obj.bin', headers);
        const direct = await og('GET', '/b/obj.bin', extra);
        expect(view(a, 'GET')).toEqual(view(direct, 'GET'));
      }
      const listHeaders = await signedHeaders(vhost, CLIENT_KEY, 'GET', '/?list-type=2&prefix=obj');
      const list = await rawRequest(g.url(), 'GET', '/?list-type=2&prefix=obj', listHeaders);
      expect(list.status).toBe(200);
      expect(list.body.toString()).toContain('<Key>obj.bin</Key>');
    } finally {
      await g.close(500);
    }
  });

  it.each([
    ['/b/%E0%A4%A', 'InvalidURI'],
    ['/b/%zz', 'InvalidURI'],
    ['/b%zz/k', 'InvalidURI'],
    ['/bad%20bucket/k', 'InvalidBucketName'],
  ])('a malformed path %s is 400 %s', async (p, code) => {
    const a = await rawRequest(h.gateway.url(), 'GET', p);
    expectS3Error(a, 400, code);
  });
});

describe('authentication', () => {
  async function presign(
    p: string,
    signingDate: Date,
    expiresIn: number,
    query: Record<string, string> = {},
  ): Promise<string> {
    return (await presignUrl(h.gateway.url(), CLIENT_KEY, 'GET', p, { signingDate, expiresIn, query }))
      .pathAndQuery;
  }

  /** Runs `fn` and checks the cache neither gained, lost nor read anything meanwhile. */
  async function cacheUntouched(fn: () => Promise<void>): Promise<void> {
    await h.gateway.idle();
    const cache = h.gateway.cache;
    const before = {
      files: (await snapshot(h.cacheDir)).map((l) => l.split(' ').slice(0, 2).join(' ')),
      ...cache?.stats(),
    };
    await fn();
    await h.gateway.idle();
    const after = {
      files: (await snapshot(h.cacheDir)).map((l) => l.split(' ').slice(0, 2).join(' ')),
      ...cache?.stats(),
    };
    expect(after).toEqual(before);
  }

  it('a presigned GET URL works until it expires, then is 403 AccessDenied', async () => {
    const ok = await rawRequest(h.gateway.url(), 'GET', await presign('/b/obj.bin', new Date(), 60));
    expect(ok.status).toBe(200);
    expect(sha(ok.body)).toBe(sha(data));
    await cacheUntouched(async () => {
      const expired = await rawRequest(
        h.gateway.url(),
        'GET',
        await presign('/b/obj.bin', new Date(Date.now() - 3600_000), 60),
      );
      expectS3Error(expired, 403, 'AccessDenied');
      expect(xmlField(expired, 'Message')).toBe('Request has expired');
    });
  });

  it('a presigned download link with response-* overrides is answered with them', async () => {
    const link = await presign('/b/obj.bin', new Date(), 60, {
      'response-content-disposition': 'attachment; filename="a x.bin"',
      'response-content-type': 'application/x-download',
    });
    const a = await rawRequest(h.gateway.url(), 'GET', link);
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toBe('application/x-download');
    expect(a.headers['content-disposition']).toBe('attachment; filename="a x.bin"');
    expect(sha(a.body)).toBe(sha(data));
  });

  it('bad signatures are 403 SignatureDoesNotMatch and never touch the cache, cached object or not', async () => {
    await gw('GET', '/b/obj.bin');
    await cacheUntouched(async () => {
      for (const p of ['/b/obj.bin', '/b/never-read.bin', '/b/obj.bin?versionId=zz']) {
        const headers = await signedHeaders(
          h.gateway.url(),
          { ...CLIENT_KEY, secretAccessKey: 'wrong' },
          'GET',
          p,
        );
        expectS3Error(await rawRequest(h.gateway.url(), 'GET', p, headers), 403, 'SignatureDoesNotMatch');
        const good = await signedHeaders(h.gateway.url(), CLIENT_KEY, 'GET', p, { range: 'bytes=0-9' });
        // Signed for another range: the signature covers the Range header.
        expectS3Error(
          await rawRequest(h.gateway.url(), 'GET', p, { ...good, range: 'bytes=0-99' }),
          403,
          'SignatureDoesNotMatch',
        );
      }
      const unknown = await signedHeaders(
        h.gateway.url(),
        { accessKeyId: 'NOPE', secretAccessKey: 'x' },
        'GET',
        '/b/obj.bin',
      );
      expectS3Error(
        await rawRequest(h.gateway.url(), 'GET', '/b/obj.bin', unknown),
        403,
        'InvalidAccessKeyId',
      );
      expectS3Error(await rawRequest(h.gateway.url(), 'GET', '/b/obj.bin'), 403, 'AccessDenied');
      const stale = await signedHeaders(
        h.gateway.url(),
        CLIENT_KEY,
        'GET',
        '/b/obj.bin',
        {},
        undefined,
        undefined,
        new Date(Date.now() - 3600_000),
      );
      expectS3Error(
        await rawRequest(h.gateway.url(), 'GET', '/b/obj.bin', stale),
        403,
        'RequestTimeTooSkewed',
      );
    });
  });

  it('writes that fail auth change neither the cache nor the origin', async () => {
    await gw('GET', '/b/obj.bin');
    await cacheUntouched(async () => {
      const wrong = { ...CLIENT_KEY, secretAccessKey: 'wrong' };
      const body = Buffer.from('not allowed');
      const put = await signedHeaders(h.gateway.url(), wrong, 'PUT', '/b/obj.bin', {}, undefined, body);
      expectS3Error(
        await rawRequest(h.gateway.url(), 'PUT', '/b/obj.bin', put, body),
        403,
        'SignatureDoesNotMatch',
      );
      const del = await signedHeaders(h.gateway.url(), wrong, 'DELETE', '/b/obj.bin');
      expectS3Error(
        await rawRequest(h.gateway.url(), 'DELETE', '/b/obj.bin', del),
        403,
        'SignatureDoesNotMatch',
      );
    });
    expect(sha((await og('GET', '/b/obj.bin')).body)).toBe(sha(data));
  });

  it('a HEAD that fails auth gets the status and no body', async () => {
    const headers = await signedHeaders(
      h.gateway.url(),
      { ...CLIENT_KEY, secretAccessKey: 'wrong' },
      'HEAD',
      '/b/obj.bin',
    );
    const a = await rawRequest(h.gateway.url(), 'HEAD', '/b/obj.bin', headers);
    expect(a.status).toBe(403);
    expect(a.body.length).toBe(0);
  });
});

describe('CORS preflight', () => {
  it('an unsigned OPTIONS preflight is answered as the origin answers it, as S3 does', async () => {
    await h.direct.send(
      new PutBucketCorsCommand({
        Bucket: 'b',
        CORSConfiguration: {
          CORSRules: [
            {
              AllowedOrigins: ['https://app.example'],
              AllowedMethods: ['GET', 'PUT'],
              AllowedHeaders: ['*'],
            },
          ],
        },
      }),
    );
    const ask = {
      origin: 'https://app.example',
      'access-control-request-method': 'PUT',
      'access-control-request-headers': 'content-type, x-amz-date',
    };
    const direct = await rawRequest(h.origin.url, 'OPTIONS', '/b/obj.bin', ask);
    const via = await rawRequest(h.gateway.url(), 'OPTIONS', '/b/obj.bin', ask);
    expect(direct.status).toBe(200);
    expect(via.status).toBe(200);
    for (const k of [
      'access-control-allow-origin',
      'access-control-allow-methods',
      'access-control-allow-headers',
    ])
      expect(via.headers[k]).toBe(direct.headers[k]);
    const refused = await rawRequest(h.gateway.url(), 'OPTIONS', '/b/obj.bin', {
      ...ask,
      origin: 'https://evil.example',
    });
    expect(refused.status).toBe(403);
  });
});

describe('error bodies', () => {
  it('errors the origin gives are S3 XML carrying the request id of x-request-id', async () => {
    const missing = await gw('GET', '/b/absent.bin');
    expect(missing.status).toBe(404);
    expect(xmlField(missing, 'Code')).toBe('NoSuchKey');
    expect(missing.headers['x-request-id']).toMatch(/^[0-9A-F]{16}$/);
    const list = await gw('GET', '/nobucket?list-type=2');
    expectS3Error(list, 404, 'NoSuchBucket');
    const put = await signedRequest(h.gateway.url(), CLIENT_KEY, 'PUT', '/nobucket/k', {}, Buffer.from('x'));
    expectS3Error(put, 404, 'NoSuchBucket');
  });
});
