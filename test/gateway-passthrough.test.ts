import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveGatewayConfig } from '@keel/gateway';
import { rawRequest, sha, signedRequest, xmlField } from './gateway-protocol-support.js';
import { signedHeaders } from './gateway-sign-support.js';
import { KEY_A, KEY_B, setup, SLICE, type Setup } from './passthrough-origin.js';

/** The request line the gateway logged for the answer with this request id. */
function loggedRequest(s: Setup, requestId: unknown): Record<string, unknown> | undefined {
  return s.logged.find((l) => l.msg === 'request' && l.requestId === requestId);
}

describe('passthrough auth: the origin authorises every read, the cache serves the bytes', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup();
  });
  afterAll(async () => {
    await s.close();
  });

  it('caches what key A reads, then serves A from the cache after a 304 with no body from the origin', async () => {
    const data = randomBytes(3 * SLICE + 100);
    const etag = await s.put('a.bin', data);
    const first = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/a.bin');
    expect(first.status).toBe(200);
    expect(sha(first.body)).toBe(sha(data));
    expect(first.headers['x-keel-cache']).toBe('MISS');
    expect(first.headers['x-keel-authorization']).toBe('miss');
    await s.gateway.idle();

    const before = s.origin.bodyBytes();
    const judgedBefore = s.origin.judged.length;
    const second = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/a.bin');
    expect(second.status).toBe(200);
    expect(sha(second.body)).toBe(sha(data));
    expect(second.headers['x-keel-cache']).toBe('HIT');
    expect(second.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(second.headers.etag).toBe(etag);
    // The origin was asked, with the cached ETag, and answered 304: no body crossed the wire.
    const asked = s.origin.judged.slice(judgedBefore);
    expect(asked).toEqual([expect.objectContaining({ method: 'GET', status: 304, ifNoneMatch: etag })]);
    expect(s.origin.bodyBytes() - before).toBe(0);
    expect(await s.metric('keel_gateway_origin_bytes_saved_total')).toBe(data.length);
    expect(await s.metric('keel_gateway_origin_authorizations_total', 'result="authorized-hit"')).toBe(1);
    expect(loggedRequest(s, second.headers['x-request-id'])).toMatchObject({
      outcome: 'HIT',
      authorization: 'authorized-hit',
    });
    expect(await s.metric('keel_gateway_requests_total', 'method="GET",outcome="HIT"')).toBe(1);
    expect(second.headers['x-keel-cache-tier']).toBe('disk');

    // The read took the object's blocks into the memory tier: the next one, authorised by the
    // origin all the same (a 304), takes its bytes from memory.
    const third = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/a.bin');
    expect(sha(third.body)).toBe(sha(data));
    expect({ cache: third.headers['x-keel-cache'], tier: third.headers['x-keel-cache-tier'] }).toEqual({
      cache: 'HIT',
      tier: 'memory',
    });
    expect(s.origin.judged.slice(judgedBefore + 1)).toEqual([
      expect.objectContaining({ method: 'GET', status: 304, ifNoneMatch: etag }),
    ]);
    // Key B, refused by the origin, gets none of those bytes from memory either.
    const refused = await signedRequest(s.gateway.url(), KEY_B, 'GET', '/x/a.bin');
    expect(refused.status).toBe(403);
    expect(refused.body.includes(data.subarray(0, 64))).toBe(false);
  });

  it('serves a cached range and a HEAD after a 304, each authorised by the origin', async () => {
    const data = randomBytes(2 * SLICE);
    const etag = await s.put('r.bin', data);
    await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/r.bin');
    await s.gateway.idle();
    const range = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/r.bin', {
      range: `bytes=${SLICE - 10}-${SLICE + 9}`,
    });
    expect(range.status).toBe(206);
    expect(range.headers['content-range']).toBe(`bytes ${SLICE - 10}-${SLICE + 9}/${data.length}`);
    expect(range.body.equals(data.subarray(SLICE - 10, SLICE + 10))).toBe(true);
    expect(range.headers['x-keel-authorization']).toBe('authorized-hit');
    const judged = s.origin.judged.at(-1);
    expect(judged).toMatchObject({ status: 304, ifNoneMatch: etag });

    const head = await signedRequest(s.gateway.url(), KEY_A, 'HEAD', '/x/r.bin');
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(data.length));
    expect(head.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(s.origin.judged.at(-1)).toMatchObject({ method: 'HEAD', status: 304, ifNoneMatch: etag });
  });

  it('gives key B, validly signed for its own key, the origin’s 403 and no cached byte', async () => {
    const data = randomBytes(SLICE);
    await s.put('secret.bin', data);
    await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/secret.bin');
    await s.gateway.idle();
    for (const [method, headers] of [
      ['GET', {}],
      ['GET', { range: 'bytes=0-99' }],
      ['HEAD', {}],
    ] as const) {
      const b = await signedRequest(s.gateway.url(), KEY_B, method, '/x/secret.bin', { ...headers });
      expect(b.status).toBe(403);
      expect(b.headers['x-keel-cache']).toBe('DENIED');
      expect(b.headers['x-keel-authorization']).toBe('denied');
      if (method === 'GET') expect(xmlField(b, 'Code')).toBe('AccessDenied');
      expect(b.body.includes(data.subarray(0, 32))).toBe(false);
      expect(b.body.length).toBeLessThan(1024);
    }
    expect(s.origin.judged.at(-1)).toMatchObject({ status: 403 });
    // The cache is left as it is: A still gets its authorised hit.
    const a = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/secret.bin');
    expect(a.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(sha(a.body)).toBe(sha(data));
  });

  it('gives a forged request naming key A with a wrong signature the origin’s 403 and no cached byte', async () => {
    const data = randomBytes(SLICE);
    await s.put('forged.bin', data);
    await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/forged.bin');
    await s.gateway.idle();
    // A's access key id (not a secret), signed with another secret.
    const forger = { accessKeyId: KEY_A.accessKeyId, secretAccessKey: 'guessed' };
    const forged = await signedRequest(s.gateway.url(), forger, 'GET', '/x/forged.bin');
    expect(forged.status).toBe(403);
    expect(xmlField(forged, 'Code')).toBe('SignatureDoesNotMatch');
    expect(forged.headers['x-keel-cache']).toBe('DENIED');
    expect(forged.body.includes(data.subarray(0, 32))).toBe(false);
    // A genuine signature with one signed header changed on the way is forged too.
    const h = await signedHeaders(s.gateway.url(), KEY_A, 'GET', '/x/forged.bin', { range: 'bytes=0-9' });
    const tampered = await rawRequest(s.gateway.url(), 'GET', '/x/forged.bin', { ...h, range: 'bytes=0-99' });
    expect(tampered.status).toBe(403);
    expect(tampered.body.includes(data.subarray(0, 10))).toBe(false);
    // No signature at all: the origin refuses it too.
    const unsigned = await rawRequest(s.gateway.url(), 'GET', '/x/forged.bin');
    expect(unsigned.status).toBe(403);
    expect(unsigned.body.includes(data.subarray(0, 32))).toBe(false);
  });

  it('serves and caches the new bytes when the object changed at the origin', async () => {
    const old = randomBytes(SLICE + 5);
    await s.put('changing.bin', old);
    await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/changing.bin');
    await s.gateway.idle();
    // Twice more: the old version's metadata and blocks are in memory when it changes.
    await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/changing.bin');
    const inMemory = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/changing.bin');
    expect(inMemory.headers['x-keel-cache-tier']).toBe('memory');
    const fresh = randomBytes(2 * SLICE + 7);
    const etag = await s.put('changing.bin', fresh);
    const changed = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/changing.bin');
    expect(changed.status).toBe(200);
    expect(sha(changed.body)).toBe(sha(fresh));
    expect(changed.headers['x-keel-cache']).toBe('MISS');
    expect(changed.headers['x-keel-authorization']).toBe('changed');
    await s.gateway.idle();
    const before = s.origin.bodyBytes();
    const next = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/changing.bin');
    expect(next.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(next.headers.etag).toBe(etag);
    expect(sha(next.body)).toBe(sha(fresh));
    // Then from memory, the new version's: the old one's metadata was let go, not asked about again.
    const again = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/changing.bin');
    expect(again.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(again.headers['x-keel-cache-tier']).toBe('memory');
    expect(sha(again.body)).toBe(sha(fresh));
    expect(s.origin.bodyBytes() - before).toBe(0);
  });

  it('forwards a read with the client’s own If-None-Match as it is', async () => {
    const etag = await s.put('own-inm.bin', randomBytes(100));
    const res = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/own-inm.bin', {
      'if-none-match': etag,
    });
    expect(res.status).toBe(304);
    expect(res.headers['x-keel-cache']).toBe('PASS');
    expect(res.headers['x-keel-authorization']).toBe('forwarded');
  });
});

describe('passthrough auth with the origin down', () => {
  it('answers 503 with Retry-After for a cached object, never a STALE copy', async () => {
    const s = await setup();
    try {
      const data = randomBytes(SLICE);
      await s.put('down.bin', data);
      const first = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/down.bin');
      expect(first.status).toBe(200);
      await s.gateway.idle();
      await s.origin.close();
      const res = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/down.bin');
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toMatch(/^\d+$/);
      expect(res.headers['x-keel-cache']).toBe('ERROR');
      expect(res.headers['x-keel-authorization']).toBe('unavailable');
      expect(res.body.includes(data.subarray(0, 32))).toBe(false);
    } finally {
      await s.close();
    }
  });
});

describe('passthrough auth settings', () => {
  it('holds no keys: client keys or origin credentials with --auth passthrough stop the start', () => {
    const base = { upstream: 'http://127.0.0.1:9000', auth: 'passthrough' };
    expect(resolveGatewayConfig(base, {})).toMatchObject({ auth: 'passthrough', authCacheSeconds: 0 });
    expect(() => resolveGatewayConfig({ ...base, clientKeys: 'A:B' }, {})).toThrow(/--client-keys/);
    expect(() => resolveGatewayConfig(base, { KEEL_ORIGIN_ACCESS_KEY_ID: 'x' })).toThrow(
      /origin credentials/,
    );
    expect(() => resolveGatewayConfig({ ...base, upstream: 'http://127.0.0.1:9000/s3' }, {})).toThrow(
      /--upstream/,
    );
    expect(() => resolveGatewayConfig({ ...base, auth: 'anonymous', authCacheSeconds: '5' }, {})).toThrow(
      /--auth-cache-seconds/,
    );
    // AWS_* variables meant for other tools are not taken as the gateway's credentials.
    expect(resolveGatewayConfig(base, { AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' })).toMatchObject({
      originAccessKeyId: undefined,
    });
  });

  it('--auth-cache-seconds trusts an access key id, not a signature: within the window a forged request naming it gets the cached bytes', async () => {
    const s = await setup({ authCacheMs: 60_000 });
    try {
      expect(s.logged.some((l) => l.level === 'warn' && String(l.msg).includes('trusts a read'))).toBe(true);
      const data = randomBytes(SLICE);
      await s.put('trusted.bin', data);
      await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/trusted.bin');
      await s.gateway.idle();
      const judged = s.origin.judged.length;
      const again = await signedRequest(s.gateway.url(), KEY_A, 'GET', '/x/trusted.bin');
      expect(again.headers['x-keel-authorization']).toBe('trusted-hit');
      expect(s.origin.judged.length).toBe(judged);
      // What the docs warn about: the id is not a secret.
      const forger = { accessKeyId: KEY_A.accessKeyId, secretAccessKey: 'guessed' };
      const forged = await signedRequest(s.gateway.url(), forger, 'GET', '/x/trusted.bin');
      expect(forged.headers['x-keel-authorization']).toBe('trusted-hit');
      // Another key id is still asked about, and refused.
      const b = await signedRequest(s.gateway.url(), KEY_B, 'GET', '/x/trusted.bin');
      expect(b.status).toBe(403);
    } finally {
      await s.close();
    }
  });
});
