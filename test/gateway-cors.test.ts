/**
 * CORS headers on the reads the gateway answers itself, compared with s3rver's for the same
 * requests. Where s3rver departs from S3's documentation the gateway is held to S3 and the test
 * says so (see `asS3`).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  CreateBucketCommand,
  DeleteBucketCorsCommand,
  PutBucketCorsCommand,
  PutObjectCommand,
  type CORSRule,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chaos, type HttpFaultProxy } from 'keel/chaos';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import {
  CLIENT_KEY,
  gatewayOptions,
  s3,
  sha,
  signedRequest,
  SLICE,
  startHarness,
  startRecorder,
  TEST_CREDENTIALS,
  type Harness,
  type RawAnswer,
  type Recorder,
} from './gateway-protocol-support.js';

let h: Harness;
const data = randomBytes(SLICE * 3 + 99);

const APP_RULE: CORSRule = {
  ID: 'app',
  AllowedOrigins: ['https://app.example'],
  AllowedMethods: ['GET', 'HEAD'],
  AllowedHeaders: ['*'],
  ExposeHeaders: ['ETag', 'x-amz-meta-owner'],
  MaxAgeSeconds: 600,
};
const APP_RULES: CORSRule[] = [
  APP_RULE,
  { AllowedOrigins: ['http://*.example.org'], AllowedMethods: ['GET'] },
];
/** The CORS headers APP_RULE gives a read from https://app.example. */
const APP_CORS = {
  'access-control-allow-origin': 'https://app.example',
  'access-control-allow-methods': 'GET, HEAD',
  'access-control-allow-credentials': 'true',
  'access-control-expose-headers': 'ETag, x-amz-meta-owner',
  'access-control-max-age': '600',
  vary: 'Origin, Access-Control-Request-Headers, Access-Control-Request-Method',
};
const PUBLIC_RULES: CORSRule[] = [
  { AllowedOrigins: ['*'], AllowedMethods: ['GET', 'HEAD'], MaxAgeSeconds: 3000 },
];

const CORS_HEADERS = [
  'access-control-allow-origin',
  'access-control-allow-methods',
  'access-control-allow-credentials',
  'access-control-expose-headers',
  'access-control-max-age',
  'access-control-allow-headers',
  'vary',
];

function corsOf(a: RawAnswer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of CORS_HEADERS) if (a.headers[k] !== undefined) out[k] = String(a.headers[k]);
  return out;
}

/**
 * s3rver's CORS headers made S3's: S3 sends the matched rule's methods (`ruleMethods`) in
 * Access-Control-Allow-Methods (s3rver only does on preflights), and omits
 * Access-Control-Allow-Credentials when Access-Control-Allow-Origin is `*` (s3rver sends `true`).
 */
function asS3(a: RawAnswer, ruleMethods: string): Record<string, string> {
  const out = corsOf(a);
  const allowed = out['access-control-allow-origin'];
  if (allowed === undefined) return out;
  out['access-control-allow-methods'] = ruleMethods;
  if (allowed === '*') delete out['access-control-allow-credentials'];
  return out;
}

const gw = (method: string, p: string, headers: Record<string, string> = {}, g = h.gateway) =>
  signedRequest(g.url(), CLIENT_KEY, method, p, headers);
const og = (method: string, p: string, headers: Record<string, string> = {}) =>
  signedRequest(h.origin.url, TEST_CREDENTIALS, method, p, headers);

async function putCors(bucket: string, rules: CORSRule[]): Promise<void> {
  await h.direct.send(new PutBucketCorsCommand({ Bucket: bucket, CORSConfiguration: { CORSRules: rules } }));
}

beforeAll(async () => {
  h = await startHarness();
  await h.direct.send(new CreateBucketCommand({ Bucket: 'pub' }));
  await h.direct.send(new CreateBucketCommand({ Bucket: 'plain' }));
  for (const bucket of ['b', 'pub', 'plain'])
    await h.direct.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'obj.bin', Body: data, Metadata: { owner: 'keel' } }),
    );
  await putCors('b', APP_RULES);
  await putCors('pub', PUBLIC_RULES);
});
afterAll(async () => {
  await h.close();
});

describe('CORS headers of reads, as the origin answers them', () => {
  /** Asks the origin once and the gateway twice (a miss, then from the cache). */
  async function compare(
    bucket: string,
    ruleMethods: string,
    method: string,
    headers: Record<string, string>,
    key = `obj-${Math.random().toString(36).slice(2)}.bin`,
  ): Promise<{ miss: RawAnswer; hit: RawAnswer; direct: RawAnswer }> {
    await h.direct.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: data }));
    const direct = await og(method, `/${bucket}/${key}`, headers);
    const miss = await gw(method, `/${bucket}/${key}`, headers);
    // A HEAD caches no bytes: a plain GET fills the cache for the hit.
    await gw('GET', `/${bucket}/${key}`);
    await h.gateway.idle();
    const hit = await gw(method, `/${bucket}/${key}`, headers);
    expect(miss.status).toBe(direct.status);
    expect(hit.status).toBe(direct.status);
    expect(miss.headers['x-keel-cache']).toBe('MISS');
    expect(hit.headers['x-keel-cache']).toBe('HIT');
    expect(corsOf(miss)).toEqual(asS3(direct, ruleMethods));
    expect(corsOf(hit)).toEqual(asS3(direct, ruleMethods));
    if (method === 'GET' && direct.status === 200) expect(sha(hit.body)).toBe(sha(data));
    return { miss, hit, direct };
  }

  it('a GET from an allowed origin gets that origin, the rule’s methods, exposed headers, max age, credentials and Vary', async () => {
    const { hit } = await compare('b', 'GET, HEAD', 'GET', { origin: 'https://app.example' });
    expect(corsOf(hit)).toEqual(APP_CORS);
  });

  it('a HEAD from an allowed origin gets the same headers', async () => {
    const { hit } = await compare('b', 'GET, HEAD', 'HEAD', { origin: 'https://app.example' });
    expect(hit.headers['access-control-allow-origin']).toBe('https://app.example');
  });

  it('an origin allowed by a wildcard pattern gets its own origin back', async () => {
    const { hit } = await compare('b', 'GET', 'GET', { origin: 'http://cdn.example.org' });
    expect(hit.headers['access-control-allow-origin']).toBe('http://cdn.example.org');
    expect(hit.headers['access-control-max-age']).toBeUndefined();
  });

  it('an origin allowed by * gets *, without Access-Control-Allow-Credentials', async () => {
    const { hit } = await compare('pub', 'GET, HEAD', 'GET', { origin: 'https://anyone.example' });
    expect(hit.headers['access-control-allow-origin']).toBe('*');
    expect(hit.headers['access-control-allow-credentials']).toBeUndefined();
    expect(hit.headers['access-control-max-age']).toBe('3000');
  });

  it('an origin no rule allows gets no CORS header at all', async () => {
    const { hit } = await compare('b', '', 'GET', { origin: 'https://evil.example' });
    expect(corsOf(hit)).toEqual({});
  });

  it('a method the matching origin’s rule does not allow gets none (HEAD from the GET-only wildcard rule)', async () => {
    const { hit } = await compare('b', '', 'HEAD', { origin: 'http://cdn.example.org' });
    expect(corsOf(hit)).toEqual({});
  });

  it('a read without Origin gets none', async () => {
    const { hit } = await compare('b', '', 'GET', {});
    expect(corsOf(hit)).toEqual({});
  });

  it('a bucket without CORS configuration answers an Origin with none', async () => {
    const { hit } = await compare('plain', '', 'GET', { origin: 'https://app.example' });
    expect(corsOf(hit)).toEqual({});
  });

  it('a range GET gets them on its 206', async () => {
    const { hit } = await compare('b', 'GET, HEAD', 'GET', {
      origin: 'https://app.example',
      range: 'bytes=10-99',
    });
    expect(hit.status).toBe(206);
    expect(hit.headers['access-control-allow-origin']).toBe('https://app.example');
  });
});

describe('CORS headers on every kind of read answer', () => {
  const origin = { origin: 'https://app.example' };

  it('a PARTIAL answer (part of the range cached) carries them', async () => {
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'partial.bin', Body: data }));
    await gw('GET', '/b/partial.bin', { range: `bytes=0-${SLICE - 1}` });
    await h.gateway.idle();
    const a = await gw('GET', '/b/partial.bin', origin);
    expect(a.headers['x-keel-cache']).toBe('PARTIAL');
    expect(sha(a.body)).toBe(sha(data));
    expect(corsOf(a)).toEqual(APP_CORS);
  });

  it('a 304 carries them', async () => {
    const first = await gw('GET', '/b/obj.bin', origin);
    const a = await gw('GET', '/b/obj.bin', { ...origin, 'if-none-match': String(first.headers.etag) });
    expect(a.status).toBe(304);
    expect(corsOf(a)).toEqual(APP_CORS);
  });

  it('error answers carry them: 404 NoSuchKey, 412 and 416', async () => {
    const missing = await gw('GET', '/b/no-such-key', origin);
    expect(missing.status).toBe(404);
    expect(corsOf(missing)).toEqual(APP_CORS);
    const failed = await gw('GET', '/b/obj.bin', { ...origin, 'if-match': '"not-the-etag"' });
    expect(failed.status).toBe(412);
    expect(corsOf(failed)).toEqual(APP_CORS);
    const range = await gw('GET', '/b/obj.bin', { ...origin, range: `bytes=${data.length + 10}-` });
    expect(range.status).toBe(416);
    expect(corsOf(range)).toEqual(APP_CORS);
  });
});

/** A gateway whose origin requests go through a fault proxy, then a recorder, to s3rver. */
async function throughFaults(extra: Partial<GatewayOptions> = {}): Promise<{
  gateway: Gateway;
  faults: HttpFaultProxy;
  recorder: Recorder;
  corsFetches: () => number;
  close(): Promise<void>;
}> {
  const recorder = await startRecorder(h.origin.url);
  const faults = await chaos.httpProxy({ upstream: recorder.url });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-cors-'));
  const gateway = await createGateway(
    gatewayOptions(faults.url, {
      cacheDir: dir,
      sliceBytes: SLICE,
      ...extra,
    }),
  );
  await gateway.listen(0);
  return {
    gateway,
    faults,
    recorder,
    corsFetches: () => recorder.seen.filter((r) => r.method === 'GET' && /\?cors$/.test(r.url)).length,
    close: async () => {
      await gateway.close(1000);
      await faults.close();
      await recorder.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The fault that makes the origin's GetBucketCors (and only it) fail for bucket `b`. */
const CORS_FAILS = {
  name: 'cors-fails',
  method: 'GET',
  path: /^\/b$/,
  action: { type: 'status', status: 500 },
} as const;

describe('the bucket CORS rules cache', () => {
  it('asks the origin once for concurrent reads, and not at all for reads without Origin', async () => {
    const t = await throughFaults();
    try {
      await Promise.all([1, 2, 3].map(() => gw('GET', '/b/obj.bin', {}, t.gateway)));
      expect(t.corsFetches()).toBe(0);
      const answers = await Promise.all(
        [1, 2, 3, 4, 5].map(() => gw('GET', '/b/obj.bin', { origin: 'https://app.example' }, t.gateway)),
      );
      for (const a of answers) expect(a.headers['access-control-allow-origin']).toBe('https://app.example');
      await gw('HEAD', '/b/obj.bin', { origin: 'https://app.example' }, t.gateway);
      expect(t.corsFetches()).toBe(1);
    } finally {
      await t.close();
    }
  });

  it('keeps the rules for the TTL, and drops them when PutBucketCors or DeleteBucketCors passes through the gateway', async () => {
    const t = await throughFaults();
    const client = s3(t.gateway.url(), CLIENT_KEY);
    try {
      await putCors('b', APP_RULES);
      const origin = { origin: 'https://app.example' };
      expect((await gw('GET', '/b/obj.bin', origin, t.gateway)).headers['access-control-max-age']).toBe(
        '600',
      );
      // Changed at the origin behind the gateway's back: the rules it knows stay for the TTL.
      await putCors('b', [{ ...APP_RULE, MaxAgeSeconds: 5 }]);
      expect((await gw('GET', '/b/obj.bin', origin, t.gateway)).headers['access-control-max-age']).toBe(
        '600',
      );
      // Changed through the gateway: the next read asks the origin again.
      await client.send(
        new PutBucketCorsCommand({
          Bucket: 'b',
          CORSConfiguration: { CORSRules: [{ ...APP_RULE, MaxAgeSeconds: 42 }] },
        }),
      );
      expect((await gw('GET', '/b/obj.bin', origin, t.gateway)).headers['access-control-max-age']).toBe('42');
      expect(t.corsFetches()).toBe(2);
      await client.send(new DeleteBucketCorsCommand({ Bucket: 'b' }));
      const after = await gw('GET', '/b/obj.bin', origin, t.gateway);
      expect(after.status).toBe(200);
      expect(corsOf(after)).toEqual({});
    } finally {
      client.destroy();
      await putCors('b', APP_RULES);
      await t.close();
    }
  });

  it('reads succeed without CORS headers when the origin’s ?cors fails before any rules are known', async () => {
    const t = await throughFaults();
    try {
      t.faults.add(CORS_FAILS);
      const a = await gw('GET', '/b/obj.bin', { origin: 'https://app.example' }, t.gateway);
      expect(a.status).toBe(200);
      expect(sha(a.body)).toBe(sha(data));
      expect(corsOf(a)).toEqual({});
      expect(t.faults.stats.faults['cors-fails']).toBe(1);
    } finally {
      await t.close();
    }
  });

  it('uses the last rules known when the origin’s ?cors fails after the TTL, on hits and on STALE answers', async () => {
    // TTL 0: every read with Origin asks again (objects are revalidated every time too).
    const t = await throughFaults({ ttlMs: 0, revalidation: { backoffMs: 60_000 } });
    const origin = { origin: 'https://app.example' };
    try {
      const learnt = await gw('GET', '/b/obj.bin', origin, t.gateway);
      expect(learnt.headers['access-control-allow-origin']).toBe('https://app.example');
      await t.gateway.idle();
      t.faults.add(CORS_FAILS);
      const a = await gw('GET', '/b/obj.bin', origin, t.gateway);
      expect(a.status).toBe(200);
      expect(t.faults.stats.faults['cors-fails']).toBe(1);
      expect(corsOf(a)['access-control-allow-origin']).toBe('https://app.example');
      // Now the whole origin fails: the cached copy is served STALE, with the same headers.
      t.faults.add({ name: 'down', path: '/b/', action: { type: 'status', status: 500 } });
      const stale = await gw('GET', '/b/obj.bin', origin, t.gateway);
      expect(stale.headers['x-keel-cache']).toBe('STALE');
      expect(sha(stale.body)).toBe(sha(data));
      expect(corsOf(stale)['access-control-allow-origin']).toBe('https://app.example');
      // And an object that is not cached gets the origin's own 500, relayed, that carries them too.
      const down = await gw('GET', '/b/never-cached.bin', origin, t.gateway);
      expect(down.status).toBe(500);
      expect(down.headers['x-keel-cache']).toBe('PASS');
      expect(corsOf(down)['access-control-allow-origin']).toBe('https://app.example');
    } finally {
      await t.close();
    }
  });
});
