/**
 * What the gateway checks in an upload before the origin may store it: a PUT must say how long
 * its body is.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateway, type Gateway } from '../src/gateway/index.js';
import {
  bodyOf,
  CLIENT_KEY,
  sha,
  startHarness,
  startRecorder,
  TEST_CREDENTIALS,
  type Harness,
  type RawAnswer,
  type Recorder,
} from './gateway-protocol-support.js';
import { signedHeaders } from './gateway-sign-support.js';

let h: Harness;
/** A gateway in front of a recorder, to see what reached the origin. */
let recorder: Recorder;
let recorded: Gateway;

beforeAll(async () => {
  h = await startHarness();
  recorder = await startRecorder(h.origin.url);
  recorded = await createGateway({
    upstream: recorder.url,
    originCredentials: TEST_CREDENTIALS,
    auth: 'gateway',
    clientKeys: [CLIENT_KEY],
    cacheDir: `${h.cacheDir}-recorded`,
    log: () => undefined,
  });
  await recorded.listen(0);
});
afterAll(async () => {
  await recorded.close(1000);
  await recorder.close();
  await h.close();
});

/** The object at the origin (sha256), or its error name. */
async function atOrigin(key: string): Promise<string> {
  try {
    return sha(await bodyOf(await h.direct.send(new GetObjectCommand({ Bucket: 'b', Key: key }))));
  } catch (err) {
    return (err as Error).name;
  }
}

function xmlField(a: RawAnswer, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(a.body.toString())?.[1];
}

function expectS3Error(a: RawAnswer, status: number, code: string): void {
  expect(a.status).toBe(status);
  expect(xmlField(a, 'Code')).toBe(code);
  expect(xmlField(a, 'RequestId')).toBe(a.headers['x-request-id']);
}

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
    expect(await atOrigin('no-length.bin')).toBe(sha(old));
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
    expect(await atOrigin(key)).toBe(sha(Buffer.from(stored)));
  });
});
