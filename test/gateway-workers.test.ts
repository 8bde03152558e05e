import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';
import { metricSum, startFleet } from './gateway-workers-support.js';

let origin: S3Origin;
let dir: string;
const small = randomBytes(200_000);
const big = randomBytes(6 * 1024 * 1024 + 123);
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-workers-'));
  const s3 = new S3Client({
    endpoint: origin.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: TEST_CREDENTIALS,
  });
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'small.bin', Body: small }));
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'big.bin', Body: big }));
  s3.destroy();
});

afterAll(async () => {
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
});
