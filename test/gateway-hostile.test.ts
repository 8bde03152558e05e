import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateway, type Gateway } from '@keel/gateway';
import {
  CLIENT_KEY,
  expectS3Error,
  gatewayOptions,
  originClient,
  rawRequest,
  signedRequest,
  startRecorder,
  type Recorder,
} from './gateway-protocol-support.js';
import { startS3Origin, type S3Origin } from './s3-origin.js';

/*
 * Input a client controls cannot grow the gateway's memory, make it answer 500, reach the origin
 * where it should not, or carry the gateway's signature where it should not.
 */

let origin: S3Origin;
let recorder: Recorder;
let gateway: Gateway;
let root: string;
const logged: { level: string; msg: string }[] = [];

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  recorder = await startRecorder(origin.url);
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-hostile-'));
  gateway = await createGateway(
    gatewayOptions(recorder.url, {
      cacheDir: path.join(root, 'cache'),
      defaultMetrics: false,
      log: (level, msg) => logged.push({ level, msg }),
    }),
  );
  await gateway.listen(0);
});

afterAll(async () => {
  await gateway.close(1000);
  await recorder.close();
  await origin.close();
  await rm(root, { recursive: true, force: true });
});

describe('malformed requests', () => {
  it.each([
    ['a signed request', '/b/key?x=%ZZ', true],
    ['a presigned URL', '/b/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&x=%E0%A4%A', false],
    ['a path', '/b/bad%ZZkey', false],
  ])(
    '%s with a malformed percent escape is 400 InvalidURI, logged at info, never forwarded',
    async (_what, p, sign) => {
      const errorsBefore = logged.filter((l) => l.level === 'error').length;
      const seen = recorder.seen.length;
      const a = sign
        ? await signedRequest(gateway.url(), CLIENT_KEY, 'GET', p)
        : await rawRequest(gateway.url(), 'GET', p);
      expectS3Error(a, 400, 'InvalidURI');
      expect(a.headers['x-keel-cache']).toBe('ERROR');
      expect(logged.filter((l) => l.level === 'error').length).toBe(errorsBefore);
      expect(recorder.seen.length).toBe(seen);
    },
  );

  it.each([
    '/./key',
    '/../key',
    '/../../etc/passwd',
    '/.hidden/key',
    '/a..b/key',
    '/-bucket/key',
    '/bucket-/key',
  ])('%s names no bucket S3 could have: 400 InvalidBucketName before anything is forwarded', async (p) => {
    const seen = recorder.seen.length;
    const a = await signedRequest(gateway.url(), CLIENT_KEY, 'GET', p);
    expectS3Error(a, 400, 'InvalidBucketName');
    expect(recorder.seen.length).toBe(seen);
  });

  it('forwards an unauthenticated CORS preflight without the gateway signature and without its body', async () => {
    const seen = recorder.seen.length;
    const a = await rawRequest(
      gateway.url(),
      'OPTIONS',
      '/b/key',
      {
        origin: 'https://app.example',
        'access-control-request-method': 'GET',
        'content-type': 'text/plain',
        'content-length': '11',
      },
      Buffer.from('hello there'),
    );
    expect(a.headers['x-keel-cache']).toBe('PASS');
    const fwd = recorder.seen.slice(seen);
    expect(fwd).toHaveLength(1);
    expect(fwd[0]?.method).toBe('OPTIONS');
    expect(fwd[0]?.headers.authorization).toBeUndefined();
    expect(fwd[0]?.headers['x-amz-date']).toBeUndefined();
    expect(fwd[0]?.body.length).toBe(0);
  });
});

describe('bucket names a client sends', () => {
  /** Heap in use after a full collection, in MiB. */
  function heapMiB(): number {
    v8.setFlagsFromString('--expose-gc');
    (vm.runInNewContext('gc') as () => void)();
    return process.memoryUsage().heapUsed / 1024 / 1024;
  }

  /**
   * Sends a GET of each path, pipelined over 8 connections (the fastest a client can push them),
   * and resolves once every answer has come back.
   */
  async function sendAll(
    paths: string[],
    method = 'GET',
    headers: (p: string) => Record<string, string> = () => ({}),
  ): Promise<void> {
    const u = new URL(gateway.url());
    const lanes = 8;
    await Promise.all(
      Array.from({ length: lanes }, async (_, lane) => {
        const mine = paths.filter((_p, i) => i % lanes === lane);
        const socket = net.connect(Number(u.port), u.hostname);
        await new Promise((r) => socket.once('connect', r));
        let answered = 0;
        const done = new Promise<void>((resolve, reject) => {
          let tail = '';
          socket.on('data', (d: Buffer) => {
            const text = tail + d.toString('latin1');
            answered += text.split('HTTP/1.1 ').length - 1;
            tail = text.slice(-9);
            if (answered >= mine.length) resolve();
          });
          socket.on('error', reject);
        });
        for (let i = 0; i < mine.length; i += 500) {
          const batch = mine
            .slice(i, i + 500)
            .map((p) => {
              const h = Object.entries({ host: u.host, ...headers(p) })
                .map(([k, v]) => `${k}: ${v}\r\n`)
                .join('');
              return `${method} ${p} HTTP/1.1\r\n${h}\r\n`;
            })
            .join('');
          if (!socket.write(batch)) await new Promise((r) => socket.once('drain', r));
          // Keep the answers flowing: at most a few thousand requests ahead of them.
          while (i - answered > 4000) await new Promise((r) => setTimeout(r, 5));
        }
        await done;
        socket.destroy();
      }),
    );
  }

  it(
    'create nothing for 100,000 names sent unauthenticated or for buckets the origin does not have',
    { timeout: 120_000 },
    async () => {
      const before = heapMiB();
      // The service breaker ('') always exists; bucket breakers are what a name could make.
      const buckets = (): string[] => Object.keys(gateway.guard.breakerStates()).filter((b) => b !== '');
      const bucketsBefore = buckets().length;
      // Unsigned, or signed with a key the gateway does not know: refused before anything is made for them.
      await sendAll(Array.from({ length: 40_000 }, (_, i) => `/bucket-${i}/key`));
      // CORS preflights go to the origin (unsigned), and still make nothing for the names they carry.
      await sendAll(
        Array.from({ length: 20_000 }, (_, i) => `/preflight-${i}/key`),
        'OPTIONS',
        () => ({
          origin: 'https://app.example',
          'access-control-request-method': 'GET',
        }),
      );
      await sendAll(
        Array.from({ length: 40_000 }, (_, i) => `/forged-${i}/key`),
        'GET',
        () => ({
          authorization: `AWS4-HMAC-SHA256 Credential=NOSUCHKEY/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=${'0'.repeat(64)}`,
          'x-amz-date': '20260101T000000Z',
          'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
        }),
      );
      expect(buckets().length).toBe(bucketsBefore);
      expect(heapMiB() - before).toBeLessThan(20);
      // Signed, for buckets the origin does not have (404 NoSuchBucket): nothing is made either.
      for (let i = 0; i < 200; i++) {
        const a = await signedRequest(gateway.url(), CLIENT_KEY, 'GET', `/nobucket-${i}/key`);
        expect(a.status).toBe(404);
      }
      expect(Object.keys(gateway.guard.breakerStates()).filter((b) => b.startsWith('nobucket-'))).toEqual([]);
      // The same with an Origin header: the bucket's CORS rules are asked for, but nothing is
      // remembered for a bucket the origin does not have.
      const corsBefore = gateway.corsBuckets();
      for (let i = 0; i < 200; i++) {
        const a = await signedRequest(gateway.url(), CLIENT_KEY, 'GET', `/nocors-${i}/key`, {
          origin: 'https://app.example',
        });
        expect(a.status).toBe(404);
      }
      expect(gateway.corsBuckets()).toBe(corsBefore);
      // A bucket the origin has, without a CORS configuration (404 NoSuchCORSConfiguration): remembered.
      const s3 = originClient(origin);
      await s3.send(new CreateBucketCommand({ Bucket: 'cors-known' }));
      s3.destroy();
      const known = await signedRequest(gateway.url(), CLIENT_KEY, 'GET', '/cors-known/key', {
        origin: 'https://app.example',
      });
      expect(known.status).toBe(404);
      expect(gateway.corsBuckets()).toBe(corsBefore + 1);
    },
  );

  it('keep at most maxBuckets breakers, the least recently used forgotten, with their metric series', async () => {
    const g = await createGateway(
      gatewayOptions(origin.url, {
        auth: 'anonymous',
        defaultMetrics: false,
        guard: { maxBuckets: 10 },
        log: () => undefined,
      }),
    );
    await g.listen(0);
    try {
      const s3 = originClient(origin);
      for (let i = 0; i < 30; i++) {
        // The origin has these buckets and objects: each answer shows the bucket exists, so each
        // gets a breaker (a 404 would not tell a missing bucket from a missing key).
        await s3.send(new CreateBucketCommand({ Bucket: `known-${i}` }));
        await s3.send(new PutObjectCommand({ Bucket: `known-${i}`, Key: 'key', Body: 'x' }));
        expect((await rawRequest(g.url(), 'GET', `/known-${i}/key`)).status).toBe(200);
      }
      s3.destroy();
      const buckets = Object.keys(g.guard.breakerStates()).filter((b) => b.startsWith('known-'));
      expect(buckets).toHaveLength(10);
      expect(buckets).toContain('known-29');
      expect(buckets).not.toContain('known-0');
      const text = await g.metrics.registry.metrics();
      const series = text.split('\n').filter((l) => l.startsWith('keel_breaker_state{breaker="known-'));
      expect(series).toHaveLength(10);
    } finally {
      await g.close(500);
    }
  });
});
