import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createGateway,
  resolveGatewayConfig,
  runGateway,
  type Gateway,
  type GatewayOptions,
} from '@keel/gateway';
import { pino } from 'pino';
import { VirtualClock } from 'keel';
import { rawRequest, xmlField } from './gateway-protocol-support.js';
import { until } from './gateway-run-support.js';

/*
 * The origin guard, against an origin scripted per test: how long a client waits for an origin
 * that hangs, what its breaker counts, and which origin answers reach the client as they were.
 */

type Script = (req: http.IncomingMessage, res: http.ServerResponse) => void;

let script: Script;
let origin: http.Server;
let originUrl: string;
let seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[] = [];
let root: string;
const gateways: Gateway[] = [];
const held: http.ServerResponse[] = [];

const ETAG = '"0123456789abcdef0123456789abcdef"';
const BODY = Buffer.alloc(1000, 7);

/** An object answer as S3 gives it: the whole object, or the range asked for. */
function object(req: http.IncomingMessage, res: http.ServerResponse): void {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const headers = {
    etag: ETAG,
    'content-type': 'application/octet-stream',
    'last-modified': new Date(0).toUTCString(),
  };
  if (!m) {
    res.writeHead(200, { ...headers, 'content-length': BODY.length });
    res.end(req.method === 'HEAD' ? undefined : BODY);
    return;
  }
  const start = Number(m[1]);
  const end = Math.min(BODY.length - 1, m[2] === '' ? BODY.length - 1 : Number(m[2]));
  res.writeHead(206, {
    ...headers,
    'content-length': end - start + 1,
    'content-range': `bytes ${start}-${end}/${BODY.length}`,
  });
  res.end(req.method === 'HEAD' ? undefined : BODY.subarray(start, end + 1));
}

/** An S3 error document from the origin, with its own request id. */
function s3Error(res: http.ServerResponse, status: number, code: string, originId = 'ORIGIN-ID-1'): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>scripted ${code}</Message><RequestId>${originId}</RequestId></Error>`;
  res.writeHead(status, {
    'content-type': 'application/xml',
    'content-length': Buffer.byteLength(body),
    'x-amz-request-id': originId,
  });
  res.end(body);
}

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-guard-'));
  origin = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    script(req, res);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originUrl = `http://127.0.0.1:${(origin.address() as { port: number }).port}`;
});

afterEach(async () => {
  for (const r of held.splice(0)) r.destroy();
  for (const g of gateways.splice(0)) await g.close(200);
  seen = [];
});

afterAll(async () => {
  origin.closeAllConnections();
  await new Promise((r) => origin.close(r));
  await rm(root, { recursive: true, force: true });
});

const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];

async function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await createGateway({
    upstream: originUrl,
    auth: 'anonymous',
    cacheDir: await mkdtemp(path.join(root, 'cache-')),
    defaultMetrics: false,
    log: (level, msg, fields) => logged.push({ level, msg, ...(fields ? { fields } : {}) }),
    ...extra,
  });
  await g.listen(0);
  gateways.push(g);
  return g;
}

const get = (g: Gateway, p: string, method = 'GET'): ReturnType<typeof rawRequest> =>
  rawRequest(g.url(), method, p);

describe('an origin that accepts connections and never answers', () => {
  it('gets each uncached read its 503 with Retry-After at the deadline, whatever the retries, and opens the breaker', async () => {
    script = (_req, res) => held.push(res);
    const clock = new VirtualClock(Date.now());
    // The first-byte timeout is real time and long: only the deadline (on the clock) can end these.
    const g = await gateway({ clock, firstByteTimeoutMs: 60_000, deadlineMs: 10_000 });
    const reads = Array.from({ length: 6 }, (_, i) => get(g, `/b/key-${i}`));
    // Every read reached the origin (sockets: real time) before the clock moves.
    await until(() => seen.length === 6, 'six origin requests');
    let settled = 0;
    for (const r of reads) void r.then(() => settled++);
    await clock.advance(9_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(0);
    await clock.advance(1_500);
    const answers = await Promise.all(reads);
    for (const a of answers) {
      expect(a.status).toBe(503);
      expect(xmlField(a, 'Code')).toBe('ServiceUnavailable');
      expect(a.headers['retry-after']).toMatch(/^\d+$/);
      expect(a.headers['x-keel-cache']).toBe('ERROR');
    }
    // One origin request per client request: the deadline, not retries, ended them.
    expect(seen).toHaveLength(6);
    // Six client requests failed: the (service) breaker opened; the next read is refused at once.
    expect(g.guard.breakerStates()['']).toBe('open');
    const refused = await get(g, '/b/another');
    expect(refused.status).toBe(503);
    expect(seen).toHaveLength(6);
  });

  it('opens the breaker of a bucket the origin confirmed (not the service breaker) once its reads time out', async () => {
    script = object;
    const clock = new VirtualClock(Date.now());
    const g = await gateway({
      clock,
      firstByteTimeoutMs: 60_000,
      deadlineMs: 10_000,
      guard: { breakerFailures: 3 },
    });
    expect((await get(g, '/b/known')).status).toBe(200); // the origin shows bucket b exists
    expect(g.guard.ownBreakerOf('b')).toBeDefined();
    script = (_req, res) => held.push(res);
    const reads = Array.from({ length: 3 }, (_, i) => get(g, `/b/hung-${i}`));
    await until(() => held.length === 3, 'three origin requests');
    await clock.advance(10_500);
    for (const a of await Promise.all(reads))
      expect([a.status, a.headers['x-keel-cache']]).toEqual([503, 'ERROR']);
    expect(g.guard.breakerStates()).toMatchObject({ b: 'open', '': 'closed' });
    // Another bucket is not refused for it: its request still reaches the origin.
    const before = seen.length;
    const other = get(g, '/c/key');
    await until(() => seen.length === before + 1, 'the other bucket at the origin');
    await clock.advance(10_500);
    expect((await other).status).toBe(503);
  });

  it.each([
    // The deadline ends the first attempt before its first-byte timeout could: one attempt, ~1 s
    // (without it: three 2 s attempts, 6 s and more).
    { firstByte: '2', deadline: '1', attempts: (n: number) => n === 1, within: 4_500 },
    // The first-byte timeout cuts attempts that are then retried within the deadline (the 5 s
    // default would leave one attempt).
    { firstByte: '0.2', deadline: '3', attempts: (n: number) => n >= 2, within: 6_000 },
  ])(
    'takes both timeouts from the settings runGateway starts with: first byte $firstByte s, deadline $deadline s',
    async ({ firstByte, deadline, attempts, within }) => {
      script = (_req, res) => held.push(res);
      const config = resolveGatewayConfig(
        {
          upstream: originUrl,
          auth: 'anonymous',
          listen: '0',
          admin: '0',
          alerts: 'none',
          cacheDir: await mkdtemp(path.join(root, 'run-')),
          originAccessKeyId: 'AKIDEXAMPLE',
          originSecretAccessKey: 'secret-key-example-0123456789',
          originFirstByteTimeoutSeconds: firstByte,
          originDeadlineSeconds: deadline,
        },
        {},
      );
      const r = await runGateway(config, { logger: pino({ level: 'silent' }), defaultMetrics: false });
      try {
        const started = Date.now();
        const a = await rawRequest(r.gateway.url(), 'GET', '/b/hung');
        expect(a.status).toBe(503);
        expect(Date.now() - started).toBeLessThan(within);
        expect(attempts(seen.length), `${seen.length} origin requests`).toBe(true);
      } finally {
        await r.shutdown();
      }
    },
  );

  it('retries an attempt the first-byte timeout cut, within the deadline', async () => {
    script = (_req, res) => held.push(res);
    const g = await gateway({ firstByteTimeoutMs: 100, deadlineMs: 5_000, guard: { retryAttempts: 3 } });
    const a = await get(g, '/b/slow');
    expect(a.status).toBe(503);
    // Three attempts of 100 ms each, for one client request counted once by the breaker.
    expect(seen).toHaveLength(3);
    expect(g.guard.breakerOf('b').stats().failures).toBe(1);
  });

  it('serves a cached object STALE while the origin hangs', async () => {
    script = object;
    const clock = new VirtualClock(Date.now());
    const g = await gateway({
      clock,
      ttlMs: 1_000,
      firstByteTimeoutMs: 60_000,
      revalidation: { timeoutMs: 500 },
    });
    expect((await get(g, '/b/cached')).headers['x-keel-cache']).toBe('MISS');
    await g.idle();
    script = (_req, res) => held.push(res);
    await clock.advance(2_000);
    const read = get(g, '/b/cached');
    await until(() => held.length === 1, 'the revalidation at the origin');
    await clock.advance(600);
    const a = await read;
    expect(a.status).toBe(200);
    expect(a.headers['x-keel-cache']).toBe('STALE');
    expect(a.body.equals(BODY)).toBe(true);
  });
});

describe('the breaker', () => {
  it('counts client requests, not attempts: four reads tried three times each leave it closed, the fifth opens it', async () => {
    let n = 0;
    script = (_req, res) => s3Error(res, 500, 'InternalError', `ORIGIN-${++n}`);
    const g = await gateway({ guard: { retryAttempts: 3, breakerFailures: 5, retryBudgetRatio: 1 } });
    // Distinct keys: a key that fails again is not counted again (see the next test).
    for (let i = 0; i < 4; i++) expect((await get(g, `/b/k${i}`)).status).toBe(500);
    expect(seen).toHaveLength(12);
    expect(g.guard.breakerStates()['']).toBe('closed');
    await get(g, '/b/k4');
    expect(g.guard.breakerStates()['']).toBe('open');
  });

  it('is not opened by one key the origin keeps answering 500 for; other keys keep their own answers', async () => {
    script = (req, res) => {
      if (req.url?.startsWith('/b/bad')) s3Error(res, 500, 'InternalError');
      else if (req.url?.startsWith('/b/good')) object(req, res);
      else s3Error(res, 404, 'NoSuchKey');
    };
    const g = await gateway({ guard: { retryAttempts: 2, breakerFailures: 3, retryBudgetRatio: 1 } });
    expect((await get(g, '/b/good')).status).toBe(200);
    for (let i = 0; i < 20; i++) {
      const bad = await get(g, '/b/bad');
      expect(bad.status).toBe(500);
      expect(xmlField(bad, 'Code')).toBe('InternalError');
    }
    expect(g.guard.breakerStates().b).toBe('closed');
    const missing = await get(g, '/b/missing');
    expect(missing.status).toBe(404);
    expect(xmlField(missing, 'Code')).toBe('NoSuchKey');
  });
});

describe('the breaker and bucket requests', () => {
  it('is not opened by one listing the origin keeps answering 500 for (a client retrying it); other listings and reads keep their answers', async () => {
    script = (req, res) => {
      if (req.url?.includes('max-keys=0')) s3Error(res, 500, 'InternalError');
      else if (req.url?.startsWith('/b?') || req.url === '/b') {
        const body =
          '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>b</Name></ListBucketResult>';
        res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else object(req, res);
    };
    const g = await gateway({ guard: { retryAttempts: 1, breakerFailures: 3, retryBudgetRatio: 1 } });
    expect((await get(g, '/b/good')).status).toBe(200);
    // As botocore does: the same request again after each 500, five times, and more clients doing so.
    for (let i = 0; i < 10; i++) {
      const bad = await get(g, '/b?list-type=2&max-keys=0');
      expect(bad.status).toBe(500);
      expect(xmlField(bad, 'Code')).toBe('InternalError');
    }
    expect(g.guard.breakerStates().b).toBe('closed');
    expect((await get(g, '/b?list-type=2')).status).toBe(200);
    expect((await get(g, '/b/other')).status).toBe(200);
  });
});

describe('origin answers', () => {
  it('relays a 501 NotImplemented as it was, at once, without counting it against the breaker', async () => {
    script = (_req, res) => s3Error(res, 501, 'NotImplemented');
    const g = await gateway({ guard: { retryAttempts: 3, breakerFailures: 2 } });
    for (let i = 0; i < 5; i++) {
      const a = await get(g, `/b?acl&n=${i}`);
      expect(a.status).toBe(501);
      expect(xmlField(a, 'Code')).toBe('NotImplemented');
      expect(a.headers['x-keel-cache']).toBe('PASS');
    }
    expect(seen).toHaveLength(5);
    expect(Object.values(g.guard.breakerStates()).every((s) => s === 'closed')).toBe(true);
  });

  it("relays an origin's 500 and 503 SlowDown on reads and writes with their own code, under the gateway's request id", async () => {
    script = (req, res) =>
      req.method === 'PUT'
        ? s3Error(res, 503, 'SlowDown', 'ORIGIN-PUT')
        : s3Error(res, 500, 'InternalError', 'ORIGIN-GET');
    const g = await gateway({ guard: { retryAttempts: 1 } });
    const read = await get(g, '/b/k');
    const write = await rawRequest(g.url(), 'PUT', '/b/k', { 'content-length': '3' }, Buffer.from('abc'));
    for (const [a, status, code, originId] of [
      [read, 500, 'InternalError', 'ORIGIN-GET'],
      [write, 503, 'SlowDown', 'ORIGIN-PUT'],
    ] as const) {
      expect(a.status).toBe(status);
      expect(xmlField(a, 'Code')).toBe(code);
      expect(a.headers['x-keel-cache']).toBe('PASS');
      // One id in the header, the document and x-request-id; the origin's goes to the log.
      expect(a.headers['x-amz-request-id']).toBe(a.headers['x-request-id']);
      expect(xmlField(a, 'RequestId')).toBe(a.headers['x-request-id']);
      expect(a.headers['x-amz-id-2']).toBe(a.headers['x-request-id']);
      expect(
        logged.some(
          (l) => l.fields?.originRequestId === originId && l.fields.requestId === a.headers['x-request-id'],
        ),
      ).toBe(true);
    }
  });

  it('names every answer, hits and its own errors included, with one request id in x-amz-request-id and the document', async () => {
    script = object;
    const g = await gateway();
    const miss = await get(g, '/b/o');
    const hit = await get(g, '/b/o');
    const range = await rawRequest(g.url(), 'GET', '/b/o', { range: 'bytes=5000-' });
    for (const a of [miss, hit, range]) {
      expect(a.headers['x-amz-request-id']).toMatch(/^[0-9A-F]{16}$/);
      expect(a.headers['x-amz-request-id']).toBe(a.headers['x-request-id']);
      expect(a.headers['x-amz-id-2']).toBe(a.headers['x-request-id']);
    }
    expect(range.status).toBe(416);
    expect(xmlField(range, 'RequestId')).toBe(range.headers['x-amz-request-id']);
  });
});
