/**
 * What the gateway checks in an upload before the origin may store it: a PUT must say how long
 * its body is; an aws-chunked body's checksum trailer must match it; a body refused long before
 * its end still gets its answer to a client that goes on sending it, for a bounded time.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateway, type Gateway } from '@keel/gateway';
import { VirtualClock } from 'keel';
import {
  CLIENT_KEY,
  expectS3Error,
  gatewayOptions,
  rawRequest,
  sha,
  startHarness,
  startRecordedGateway,
  xmlField,
  type Harness,
  type RawAnswer,
  type Recorded,
  type Recorder,
} from './gateway-protocol-support.js';
import { checksumOf, chunkedUpload, signedHeaders, type ChecksumAlgorithm } from './gateway-sign-support.js';
import { until } from './gateway-run-support.js';

let h: Harness;
let recorder: Recorder;
/** A gateway in front of `recorder`, to see what reached the origin. */
let recorded: Gateway;

beforeAll(async () => {
  h = await startHarness();
  ({ recorder, gateway: recorded } = await startRecordedGateway(h, 'recorded'));
});
afterAll(async () => {
  await recorded.close(1000);
  await recorder.close();
  await h.close();
});

/**
 * Sends a request head exactly as given, over a socket of its own (node:http and fetch add a
 * Content-Length or chunked encoding to every PUT), then `body`; reads the answer to the end.
 */
function rawHttp(baseUrl: string, head: string[], body = ''): Promise<RawAnswer> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname);
    const parts: Buffer[] = [];
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('error', reject);
    socket.on('end', () => {
      const text = Buffer.concat(parts);
      const split = text.indexOf('\r\n\r\n');
      const lines = text.subarray(0, split).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const c = l.indexOf(':');
        headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
      }
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
      let rest = text.subarray(split + 4);
      if (headers['transfer-encoding'] === 'chunked') {
        const out: Buffer[] = [];
        for (;;) {
          const eol = rest.indexOf('\r\n');
          const size = parseInt(rest.subarray(0, eol).toString(), 16);
          if (!size) break;
          out.push(rest.subarray(eol + 2, eol + 2 + size));
          rest = rest.subarray(eol + 2 + size + 2);
        }
        rest = Buffer.concat(out);
      }
      resolve({ status, headers, body: rest });
      socket.destroy();
    });
    socket.write(`${head.join('\r\n')}\r\n\r\n${body}`);
  });
}

/** A signed PUT head for `path` with the given framing headers and no others. */
async function putHead(baseUrl: string, path: string, framing: Record<string, string>): Promise<string[]> {
  const signed = await signedHeaders(baseUrl, CLIENT_KEY, 'PUT', path, framing, 'UNSIGNED-PAYLOAD');
  return [
    `PUT ${path} HTTP/1.1`,
    ...Object.entries(signed).map(([k, v]) => `${k}: ${v}`),
    'connection: close',
  ];
}

describe('a PUT that does not say how long its body is', () => {
  it('is answered 411 MissingContentLength and never reaches the origin, which keeps the object', async () => {
    const old = randomBytes(1000);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'no-length.bin', Body: old }));
    const before = recorder.seen.length;
    const res = await rawHttp(recorded.url(), await putHead(recorded.url(), '/b/no-length.bin', {}));
    expectS3Error(res, 411, 'MissingContentLength');
    expect(recorder.seen.slice(before)).toEqual([]);
    expect(await h.atOrigin('no-length.bin')).toBe(sha(old));
  });

  it.each<[string, string, Record<string, string>, string, string]>([
    ['Content-Length: 0 (an empty object)', 'framed-empty.bin', { 'content-length': '0' }, '', ''],
    ['Content-Length', 'framed-length.bin', { 'content-length': '5' }, 'hello', 'hello'],
    [
      'chunked transfer encoding',
      'framed-chunked.bin',
      { 'transfer-encoding': 'chunked' },
      '5\r\nhello\r\n0\r\n\r\n',
      'hello',
    ],
  ])('is stored when it sends %s', async (_what, key, framing, body, stored) => {
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: randomBytes(1000) }));
    const res = await rawHttp(h.gateway.url(), await putHead(h.gateway.url(), `/b/${key}`, framing), body);
    expect(res.status).toBe(200);
    expect(await h.atOrigin(key)).toBe(sha(Buffer.from(stored)));
  });
});

describe('aws-chunked uploads with a checksum trailer', () => {
  // Up to 1 MiB the body is read whole and its checksum forwarded as a header; above, it streams
  // to the origin and the checksum is checked on the way.
  const SMALL = 100_000;
  const LARGE = 1024 * 1024 + 1;
  const cases: [ChecksumAlgorithm, 'signed' | 'unsigned', number][] = (
    ['crc32', 'sha1', 'sha256'] as const
  ).flatMap((algorithm) => [
    [algorithm, 'unsigned', SMALL],
    [algorithm, 'unsigned', LARGE],
    [algorithm, 'signed', SMALL],
  ]);

  const upload = async (
    key: string,
    data: Buffer,
    algorithm: ChecksumAlgorithm,
    mode: 'signed' | 'unsigned',
    value?: string,
  ): Promise<RawAnswer> => {
    const { headers, body } = await chunkedUpload(recorded.url(), CLIENT_KEY, `/b/${key}`, data, {
      signed: mode === 'signed',
      trailer: { algorithm, value },
      headers: { 'x-amz-sdk-checksum-algorithm': algorithm.toUpperCase() },
    });
    return rawRequest(recorded.url(), 'PUT', `/b/${key}`, headers, body);
  };
  const putsOf = (key: string): Recorded[] =>
    recorder.seen.filter((r) => r.method === 'PUT' && r.url.startsWith(`/b/${key}`));

  it.each(cases)(
    'stores a %s trailer that matches (%s, %i bytes) byte for byte',
    async (algorithm, mode, size) => {
      const key = `trailer-ok-${algorithm}-${mode}-${size}.bin`;
      const data = randomBytes(size);
      const res = await upload(key, data, algorithm, mode);
      expect(res.status).toBe(200);
      expect(await h.atOrigin(key)).toBe(sha(data));
      const [put] = putsOf(key);
      expect(sha(put?.body ?? Buffer.alloc(0))).toBe(sha(data));
      // Both or neither: S3 refuses an algorithm named without its checksum.
      const forwarded = size <= 1024 * 1024;
      expect(put?.headers[`x-amz-checksum-${algorithm}`]).toBe(
        forwarded ? checksumOf(algorithm, data) : undefined,
      );
      expect(put?.headers['x-amz-sdk-checksum-algorithm']).toBe(
        forwarded ? algorithm.toUpperCase() : undefined,
      );
    },
  );

  it.each(cases)(
    'refuses a %s trailer that does not match (%s, %i bytes) with 400 BadDigest, keeping the old object',
    async (algorithm, mode, size) => {
      const key = `trailer-bad-${algorithm}-${mode}-${size}.bin`;
      const old = randomBytes(1000);
      await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: old }));
      const data = randomBytes(size);
      // A well-formed checksum, of other bytes.
      const res = await upload(key, data, algorithm, mode, checksumOf(algorithm, randomBytes(size)));
      expectS3Error(res, 400, 'BadDigest');
      expect(xmlField(res, 'Message')).toContain(`x-amz-checksum-${algorithm}`);
      expect(putsOf(key)).toEqual([]);
      expect(await h.atOrigin(key)).toBe(sha(old));
    },
  );
});

describe('a body far over a limit, sent whole by node:http', () => {
  // The gateway refuses these as soon as it knows, and the client is still writing megabytes:
  // the answer must reach it all the same, not a connection reset.
  const BIG = 64 * 1024 * 1024;

  interface Sent {
    answer: RawAnswer | undefined;
    /** An error node:http raised for the request (EPIPE, ECONNRESET …), if any. */
    error: Error | undefined;
    /** The answer was read whole before the body was all written: the gateway did not wait for it. */
    answeredEarly: boolean;
  }

  /** Sends `body` whole with node:http and waits until the connection is closed. */
  function sendWhole(
    baseUrl: string,
    method: string,
    pathAndQuery: string,
    headers: Record<string, string>,
    body: Buffer,
    framing: 'content-length' | 'chunked',
  ): Promise<Sent> {
    const u = new URL(baseUrl);
    const sent: Sent = { answer: undefined, error: undefined, answeredEarly: false };
    return new Promise((resolve) => {
      const req = http.request({
        host: u.hostname,
        port: u.port,
        method,
        path: pathAndQuery,
        headers,
        agent: false,
      });
      req.on('response', (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => {
          sent.answer = { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) };
          sent.answeredEarly = !req.writableFinished;
        });
        res.on('error', (err) => (sent.error ??= err));
      });
      req.on('error', (err) => (sent.error ??= err));
      req.on('close', () => resolve(sent));
      if (framing === 'content-length') req.end(body);
      else {
        // Without Content-Length, node:http sends the writes as chunks.
        for (let i = 0; i < body.length; i += 1024 * 1024) req.write(body.subarray(i, i + 1024 * 1024));
        req.end();
      }
    });
  }

  it.each(['content-length', 'chunked'] as const)(
    'answers a 64 MiB DeleteObjects body (%s) with 400 InvalidRequest the client reads whole; the origin gets nothing',
    async (framing) => {
      const keys = [`far-over-${framing}-a.bin`, `far-over-${framing}-b.bin`];
      const head = Buffer.from(
        `<?xml version="1.0" encoding="UTF-8"?>\n<Delete>${keys.map((k) => `<Object><Key>${k}</Key></Object>`).join('')}`,
      );
      const tail = Buffer.from('</Delete>');
      const body = Buffer.concat([head, Buffer.alloc(BIG - head.length - tail.length, ' '), tail]);
      for (const k of keys) await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: k, Body: k }));
      const before = recorder.seen.length;
      const signed = await signedHeaders(
        recorded.url(),
        CLIENT_KEY,
        'POST',
        '/b?delete',
        framing === 'content-length' ? { 'content-length': String(BIG) } : { 'transfer-encoding': 'chunked' },
        undefined,
        body,
      );
      const sent = await sendWhole(recorded.url(), 'POST', '/b?delete', signed, body, framing);
      expect(sent.error).toBeUndefined();
      expect(sent.answeredEarly).toBe(true);
      const answer = sent.answer as RawAnswer;
      expectS3Error(answer, 400, 'InvalidRequest');
      expect(xmlField(answer, 'Message')).toContain(`at most ${8 * 1024 * 1024} bytes`);
      expect(answer.headers.connection).toBe('close');
      expect(recorder.seen.slice(before)).toEqual([]);
      for (const k of keys) expect(await h.atOrigin(k)).toBe(sha(Buffer.from(k)));
    },
  );

  it('answers a 64 MiB PUT with a bad signature with 403 SignatureDoesNotMatch the client reads whole, then closes; the origin gets nothing', async () => {
    const key = 'far-over-bad-signature.bin';
    const old = randomBytes(1000);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: old }));
    const before = recorder.seen.length;
    const body = Buffer.alloc(BIG, 3);
    const headers = await signedHeaders(
      recorded.url(),
      { ...CLIENT_KEY, secretAccessKey: 'not-the-secret' },
      'PUT',
      `/b/${key}`,
      { 'content-length': String(BIG) },
      'UNSIGNED-PAYLOAD',
    );
    const sent = await sendWhole(recorded.url(), 'PUT', `/b/${key}`, headers, body, 'content-length');
    expect(sent.error).toBeUndefined();
    expect(sent.answeredEarly).toBe(true);
    const answer = sent.answer as RawAnswer;
    expectS3Error(answer, 403, 'SignatureDoesNotMatch');
    // An unauthenticated body is not read on and on over a kept-alive connection.
    expect(answer.headers.connection).toBe('close');
    expect(recorder.seen.slice(before)).toEqual([]);
    expect(await h.atOrigin(key)).toBe(sha(old));
  });

  it('answers a 64 MiB aws-chunked upload with a chunk over 16 MiB with 400 InvalidRequest the client reads whole; the origin gets nothing', async () => {
    const key = 'far-over-chunk.bin';
    const old = randomBytes(1000);
    await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: old }));
    const before = recorder.seen.length;
    const { headers, body } = await chunkedUpload(
      recorded.url(),
      CLIENT_KEY,
      `/b/${key}`,
      Buffer.alloc(BIG, 7),
      {
        chunkBytes: 32 * 1024 * 1024,
      },
    );
    const sent = await sendWhole(recorded.url(), 'PUT', `/b/${key}`, headers, body, 'content-length');
    expect(sent.error).toBeUndefined();
    expect(sent.answeredEarly).toBe(true);
    const answer = sent.answer as RawAnswer;
    expectS3Error(answer, 400, 'InvalidRequest');
    expect(xmlField(answer, 'Message')).toContain(`larger than ${16 * 1024 * 1024}`);
    expect(answer.headers.connection).toBe('close');
    expect(recorder.seen.slice(before)).toEqual([]);
    expect(await h.atOrigin(key)).toBe(sha(old));
  });
});

describe('a refused request without a body', () => {
  it('keeps its kept-alive connection: two GETs with a bad signature share one socket', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const u = new URL(recorded.url());
    const get = async (): Promise<{ status: number; code: string | undefined; reused: boolean }> => {
      const headers = await signedHeaders(
        recorded.url(),
        { ...CLIENT_KEY, secretAccessKey: 'not-the-secret' },
        'GET',
        '/b/anything.bin',
      );
      return new Promise((resolve, reject) => {
        const req = http.request(
          { host: u.hostname, port: u.port, path: '/b/anything.bin', headers, agent },
          (res) => {
            const parts: Buffer[] = [];
            res.on('data', (d: Buffer) => parts.push(d));
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                code: /<Code>([^<]*)<\/Code>/.exec(Buffer.concat(parts).toString())?.[1],
                reused: req.reusedSocket,
              }),
            );
          },
        );
        req.on('error', reject);
        req.end();
      });
    };
    try {
      const first = await get();
      const second = await get();
      expect(first).toEqual({ status: 403, code: 'SignatureDoesNotMatch', reused: false });
      expect(second).toEqual({ status: 403, code: 'SignatureDoesNotMatch', reused: true });
    } finally {
      agent.destroy();
    }
  });
});

describe('a refused body that keeps coming', () => {
  it('is read and dropped for at most 30 s after the answer, then the connection is closed', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await createGateway(
      gatewayOptions(h.origin.url, {
        clock,
      }),
    );
    await g.listen(0);
    const u = new URL(g.url());
    const headers = await signedHeaders(
      g.url(),
      { ...CLIENT_KEY, secretAccessKey: 'not-the-secret' },
      'PUT',
      '/b/slow-refused.bin',
      { 'content-length': String(1024 ** 3) },
      'UNSIGNED-PAYLOAD',
    );
    const socket = net.connect(Number(u.port), u.hostname);
    let received = '';
    let closed = false;
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => (closed = true));
    try {
      const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
      socket.write(`PUT /b/slow-refused.bin HTTP/1.1\r\n${head.join('')}\r\n`);
      socket.write(Buffer.alloc(64 * 1024, 1));
      await until(() => received.includes('</Error>'), 'the 403 answer');
      expect(received).toMatch(/^HTTP\/1\.1 403 /);
      expect(received).toContain('<Code>SignatureDoesNotMatch</Code>');
      // The client goes on sending (slowly): the gateway keeps reading until the lingering time ends.
      await clock.advance(29_000);
      socket.write(Buffer.alloc(64 * 1024, 2));
      await new Promise((r) => setTimeout(r, 50));
      expect(closed).toBe(false);
      await clock.advance(1_000);
      await until(() => closed, 'the connection to be closed after 30 s');
    } finally {
      socket.destroy();
      await g.close(1000);
    }
  });
});
