import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';
import { startFleet } from './gateway-workers-support.js';

/**
 * An origin in front of s3rver that holds every request `delayMs` and then either passes it on
 * (`failing` false) or answers 500 InternalError. It notes when each request arrived, and for
 * each answer it passed on, the most requests it held at once between `resetPeak()` and then.
 */
async function scriptedOrigin(upstream: string, delayMs: number) {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true });
  const arrivals: number[] = [];
  /** The peak in flight when each success was answered. */
  const successes: number[] = [];
  let inFlight = 0;
  let peak = 0;
  let failing = false;
  const server = http.createServer((req, res) => {
    arrivals.push(Date.now());
    inFlight++;
    peak = Math.max(peak, inFlight);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      inFlight--;
    };
    res.on('close', finish);
    setTimeout(() => {
      if (failing) {
        req.resume();
        res.writeHead(500, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0"?><Error><Code>InternalError</Code><Message>scripted</Message></Error>');
        return;
      }
      const up = http.request(
        {
          agent,
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (upRes) => {
          if ((upRes.statusCode ?? 500) < 500) successes.push(peak);
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on('error', () => res.destroy());
      req.pipe(up);
    }, delayMs);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrivals,
    successes,
    resetPeak: () => {
      peak = inFlight;
    },
    fail: (on: boolean) => {
      failing = on;
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}

let origin: S3Origin;
let dir: string;
let s3: S3Client;
const body = Buffer.from('cached before the origin failed');

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-workers-breaker-'));
  s3 = new S3Client({
    endpoint: origin.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: TEST_CREDENTIALS,
  });
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'cached.txt', Body: body }));
  for (let i = 0; i < 4; i++)
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: `fresh-${i}.txt`, Body: `fresh ${i}` }));
});

afterAll(async () => {
  s3.destroy();
  await origin.close();
  await rm(dir, { recursive: true, force: true });
});

describe("keel gateway --workers: the origin breaker is the fleet's", () => {
  it('once one worker opens it, origin requests stop within 1 s whichever worker clients hit; one probe at a time; its success closes it in all', async () => {
    const scripted = await scriptedOrigin(origin.url, 300);
    const fleet = await startFleet(scripted.url, path.join(dir, 'cache'), 2);
    let stop = false;
    const clients: Promise<void>[] = [];
    try {
      // Healthy: both workers see the bucket (new connections spread over them) and cache an object.
      for (let i = 0; i < 8; i++) {
        const r = await fetch(`${fleet.url}/b/cached.txt`, { headers: { connection: 'close' } });
        expect(r.status).toBe(200);
        expect(Buffer.from(await r.arrayBuffer()).equals(body)).toBe(true);
      }
      scripted.fail(true);
      // One kept-alive connection, so one worker alone sees the origin fail until its breaker opens.
      const one = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const sockets = new Set<unknown>();
      let status = 0;
      for (let i = 0; i < 20 && status !== 503; i++) {
        status = await new Promise<number>((resolve, reject) => {
          http
            .get(`${fleet.url}/b/one-worker-${i}`, { agent: one }, (res) => {
              sockets.add(res.socket);
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            })
            .on('error', reject);
        });
      }
      one.destroy();
      expect(status).toBe(503);
      expect(sockets.size).toBe(1);
      const opened = Date.now();
      await new Promise((r) => setTimeout(r, 1_000));
      // Four clients read keys nobody cached, each on a new connection, until told to stop.
      const answers: { at: number; status: number }[] = [];
      let n = 0;
      const client = async (): Promise<void> => {
        while (!stop) {
          try {
            const r = await fetch(`${fleet.url}/b/missing-${n++}`, {
              headers: { connection: 'close' },
              signal: AbortSignal.timeout(20_000),
            });
            await r.arrayBuffer();
            answers.push({ at: Date.now(), status: r.status });
          } catch {
            answers.push({ at: Date.now(), status: 0 });
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      const quietFrom = Date.now();
      scripted.resetPeak();
      for (let i = 0; i < 4; i++) clients.push(client());
      await new Promise((r) => setTimeout(r, 2_500));
      const during = answers.filter((a) => a.at >= quietFrom);
      expect(during.length).toBeGreaterThan(20);
      expect(during.every((a) => a.status === 503)).toBe(true);
      expect(scripted.arrivals.filter((t) => t >= quietFrom)).toEqual([]);
      // A cached object is still served while the breaker is open.
      const hit = await fetch(`${fleet.url}/b/cached.txt`, { headers: { connection: 'close' } });
      expect(hit.status).toBe(200);
      expect(Buffer.from(await hit.arrayBuffer()).equals(body)).toBe(true);

      // The origin recovers; the breakers go half-open (10 s after opening) and one probe closes them.
      const before = scripted.successes.length;
      scripted.fail(false);
      while (scripted.successes.length === before && Date.now() < opened + 20_000)
        await new Promise((r) => setTimeout(r, 20));
      expect(scripted.successes.length).toBeGreaterThan(before);
      // The clients kept both workers busy, yet up to the probe's answer one request at a time.
      expect(scripted.successes[before]).toBe(1);
      stop = true;
      await Promise.all(clients);
      await new Promise((r) => setTimeout(r, 200));
      // Closed in both: fresh connections (both workers) read objects nobody cached.
      for (let i = 0; i < 8; i++) {
        const r = await fetch(`${fleet.url}/b/fresh-${i % 4}.txt`, { headers: { connection: 'close' } });
        expect(r.status).toBe(200);
        expect(await r.text()).toBe(`fresh ${i % 4}`);
      }
      fleet.proc.kill('SIGTERM');
      expect(await fleet.exited).toBe(0);
    } finally {
      stop = true;
      await Promise.all(clients);
      fleet.proc.kill('SIGKILL');
      await scripted.close();
    }
  }, 90_000);
});
