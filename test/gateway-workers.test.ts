import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';
import { countingProxy, metricSum, startFleet } from './gateway-workers-support.js';

let origin: S3Origin;
let dir: string;
const small = randomBytes(200_000);
const big = randomBytes(6 * 1024 * 1024 + 123);
const huge = randomBytes(64 * 1024 * 1024);
let s3: S3Client;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-workers-'));
  s3 = new S3Client({
    endpoint: origin.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: TEST_CREDENTIALS,
  });
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'small.bin', Body: small }));
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'big.bin', Body: big }));
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'huge.bin', Body: huge }));
});

afterAll(async () => {
  s3.destroy();
  await origin.close();
  await rm(dir, { recursive: true, force: true });
});

describe('keel gateway --workers', () => {
  it('two workers share the S3 port and one admin port: /metrics counts exactly the requests sent, /status shows each worker, SIGTERM exits 0', async () => {
    const fleet = await startFleet(origin.url, path.join(dir, 'metrics'), 2);
    try {
      const sent = 60;
      const pids = new Set<string>();
      for (let i = 0; i < sent / 6; i++) {
        // New connections each round, so the kernel spreads them over both workers.
        const rounds = await Promise.all(
          Array.from({ length: 6 }, () =>
            fetch(`${fleet.url}/b/small.bin`, { headers: { connection: 'close' } }).then(async (r) => ({
              status: r.status,
              body: Buffer.from(await r.arrayBuffer()),
            })),
          ),
        );
        for (const r of rounds) {
          expect(r.status).toBe(200);
          expect(sha(r.body)).toBe(sha(small));
        }
      }
      const status = (await (await fetch(`${fleet.admin}/status`)).json()) as {
        workers: { slot: number; pid: number; state: string; status?: unknown }[];
        totals: { workers: number; ready: number; requests: number };
      };
      expect(status.workers.map((w) => w.state)).toEqual(['ready', 'ready']);
      for (const w of status.workers) pids.add(String(w.pid));
      expect(pids.size).toBe(2);
      expect(status.workers.every((w) => w.status !== undefined)).toBe(true);
      expect(status.totals).toMatchObject({ workers: 2, ready: 2, requests: sent });
      const metrics = await (await fetch(`${fleet.admin}/metrics`)).text();
      expect(metricSum(metrics, 'keel_gateway_requests_total')).toBe(sent);
      expect(metricSum(metrics, 'keel_gateway_requests_total', { method: 'GET' })).toBe(sent);
      expect(metricSum(metrics, 'keel_gateway_workers', { state: 'ready' })).toBe(2);
      expect((await fetch(`${fleet.admin}/health/ready`)).status).toBe(200);
      fleet.proc.kill('SIGTERM');
      expect(await fleet.exited).toBe(0);
    } finally {
      fleet.proc.kill('SIGKILL');
    }
  }, 60_000);

  it('100 clients on one uncached 64 MiB object through two workers: identical bodies, the origin sends it about once', async () => {
    const proxy = await countingProxy(origin.url);
    const fleet = await startFleet(proxy.url, path.join(dir, 'stampede'), 2, ['--slice-bytes', '8MiB']);
    try {
      const want = sha(huge);
      // A client per connection, so the kernel spreads them over both workers; bodies hashed as they stream.
      const one = (): Promise<{ status: number; sha: string }> =>
        new Promise((resolve, reject) => {
          http
            .get(`${fleet.url}/b/huge.bin`, { agent: false }, (res) => {
              const h = createHash('sha256');
              res.on('data', (d: Buffer) => h.update(d));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, sha: h.digest('hex') }));
              res.on('error', reject);
            })
            .on('error', reject);
        });
      const results = await Promise.all(Array.from({ length: 100 }, one)).catch((err: unknown) => {
        console.log(
          fleet
            .stderr()
            .split('\n')
            .filter((l) => !l.includes('request'))
            .slice(-30)
            .join('\n'),
        );
        throw err;
      });
      for (const r of results) expect(r).toEqual({ status: 200, sha: want });
      expect(proxy.getBytes()).toBeLessThanOrEqual(1.05 * huge.length);
      fleet.proc.kill('SIGTERM');
      expect(await fleet.exited).toBe(0);
    } finally {
      fleet.proc.kill('SIGKILL');
      await proxy.close();
    }
  }, 180_000);

  it('a PUT through one worker, reads through the others at once: never the old bytes once it answered', async () => {
    const fleet = await startFleet(origin.url, path.join(dir, 'put'), 2);
    const key = 'changing.bin';
    try {
      let current = randomBytes(300_000);
      await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: current }));
      const get = async (): Promise<Buffer> =>
        Buffer.from(
          await (await fetch(`${fleet.url}/b/${key}`, { headers: { connection: 'close' } })).arrayBuffer(),
        );
      // Both workers cache the first version.
      for (let i = 0; i < 8; i++) expect(sha(await get())).toBe(sha(current));
      for (let round = 0; round < 5; round++) {
        const next = randomBytes(300_000);
        const put = await fetch(`${fleet.url}/b/${key}`, {
          method: 'PUT',
          body: next,
          headers: { connection: 'close' },
        });
        expect(put.status).toBe(200);
        const old = sha(current);
        current = next;
        // Answered: every worker has dropped the old version. Reads at once, over fresh connections.
        const reads = await Promise.all(Array.from({ length: 8 }, get));
        for (const body of reads) {
          expect(sha(body)).not.toBe(old);
          expect(sha(body)).toBe(sha(current));
        }
      }
      fleet.proc.kill('SIGTERM');
      expect(await fleet.exited).toBe(0);
    } finally {
      fleet.proc.kill('SIGKILL');
    }
  }, 90_000);

  it('a worker SIGKILLed under load is replaced: only its connections fail, no wrong byte, KeelWorkerRestarted raised', async () => {
    const fleet = await startFleet(origin.url, path.join(dir, 'kill'), 2);
    try {
      const want = sha(big);
      expect(sha(Buffer.from(await (await fetch(`${fleet.url}/b/big.bin`)).arrayBuffer()))).toBe(want);
      const status = async (): Promise<{ workers: { pid: number; state: string; restarts: number }[] }> =>
        // A fresh connection each time: a kept-alive one can be closed by the server as it is reused.
        (await (await fetch(`${fleet.admin}/status`, { headers: { connection: 'close' } })).json()) as {
          workers: { pid: number; state: string; restarts: number }[];
        };
      const victim = (await status()).workers[0]?.pid as number;
      let ok = 0;
      let failed = 0;
      let wrong = 0;
      let hung = 0;
      let stop = false;
      const client = async (): Promise<void> => {
        while (!stop) {
          try {
            const r = await fetch(`${fleet.url}/b/big.bin`, {
              headers: { connection: 'close' },
              signal: AbortSignal.timeout(20_000),
            });
            const body = Buffer.from(await r.arrayBuffer());
            if (r.status === 200 && sha(body) === want) ok++;
            else wrong++;
          } catch (err) {
            if ((err as Error).name === 'TimeoutError') hung++;
            else failed++; // the connection was cut: the client sees an error, never wrong bytes
          }
        }
      };
      const clients = Array.from({ length: 8 }, client);
      await new Promise((r) => setTimeout(r, 1_000));
      process.kill(victim, 'SIGKILL');
      // Replaced: two ready workers again, one restart, the new one with another pid.
      let after = await status();
      for (
        let i = 0;
        i < 300 && !(after.workers.every((w) => w.state === 'ready') && after.workers[0]?.restarts === 1);
        i++
      ) {
        await new Promise((r) => setTimeout(r, 50));
        after = await status();
      }
      expect(after.workers.map((w) => w.state)).toEqual(['ready', 'ready']);
      expect(after.workers[0]?.restarts).toBe(1);
      expect(after.workers[0]?.pid).not.toBe(victim);
      const okBefore = ok;
      await new Promise((r) => setTimeout(r, 1_000));
      stop = true;
      await Promise.all(clients);
      expect(wrong).toBe(0);
      expect(ok).toBeGreaterThan(okBefore); // served on after the replacement
      // At most the connections the dead worker held fail, each with an error: none waits for an
      // answer that cannot come (a connection the primary handed it as it died is closed too).
      expect(failed + hung).toBeLessThanOrEqual(8);
      expect(hung).toBe(0);
      expect(fleet.stderr()).toContain('KeelWorkerRestarted');
      const metrics = await (await fetch(`${fleet.admin}/metrics`)).text();
      expect(metricSum(metrics, 'keel_gateway_worker_restarts_total')).toBe(1);
      fleet.proc.kill('SIGTERM');
      expect(await fleet.exited).toBe(0);
    } finally {
      fleet.proc.kill('SIGKILL');
    }
  }, 90_000);

  it('a lookup under way in one worker when a PUT through another answers does not bring the old version back', async () => {
    const proxy = await countingProxy(origin.url);
    const fleet = await startFleet(proxy.url, path.join(dir, 'put-lookup'), 2);
    try {
      // Each round: a read starts a (slow) origin lookup of an uncached object in one worker, a PUT
      // goes through a worker meanwhile; half the time another one, which the read's worker must hear of.
      for (let round = 0; round < 6; round++) {
        const key = `lookup-${round}.bin`;
        const old = randomBytes(200_000);
        const next = randomBytes(200_000);
        await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: old }));
        proxy.delayNextGet(1_500);
        const first = fetch(`${fleet.url}/b/${key}`, { headers: { connection: 'close' } }).then(async (r) =>
          Buffer.from(await r.arrayBuffer()),
        );
        await new Promise((r) => setTimeout(r, 300));
        const put = await fetch(`${fleet.url}/b/${key}`, {
          method: 'PUT',
          body: next,
          headers: { connection: 'close' },
        });
        expect(put.status).toBe(200);
        await first; // began before the PUT: either version
        const reads = await Promise.all(
          Array.from({ length: 6 }, async () =>
            sha(
              Buffer.from(
                await (
                  await fetch(`${fleet.url}/b/${key}`, { headers: { connection: 'close' } })
                ).arrayBuffer(),
              ),
            ),
          ),
        );
        expect(reads).toEqual(Array.from({ length: 6 }, () => sha(next)));
      }
      fleet.proc.kill('SIGTERM');
      expect(await fleet.exited).toBe(0);
    } finally {
      fleet.proc.kill('SIGKILL');
      await proxy.close();
    }
  }, 120_000);
});
