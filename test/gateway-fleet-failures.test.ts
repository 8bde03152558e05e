import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFleetStatus } from '@keel/fleet';
import { failingOrigin } from './failing-origin.js';
import { countingProxy, startFleet, type Fleet } from './gateway-workers-support.js';
import {
  dropPrefix,
  freePort,
  kill,
  REDIS_URL,
  redisReachable,
  startRedisServer,
  testPrefix,
} from './redis-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

/*
 * Gateways (real processes) coordinated through Redis when a part fails: the origin (its breaker
 * is the fleet's) and Redis itself (each instance goes on alone, alerts, and rejoins).
 */

const withRedis = await redisReachable();
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

let origin: S3Origin;
let dir: string;
let s3: S3Client;
const running: Fleet[] = [];

async function stop(g: Fleet): Promise<void> {
  if (g.proc.exitCode === null && g.proc.signalCode === null) {
    g.proc.kill('SIGKILL');
    await g.exited;
  }
}

async function gateways(upstream: string, cache: string, url: string, prefix: string): Promise<Fleet[]> {
  const started = await Promise.all(
    [0, 1, 2].map(() =>
      startFleet(upstream, cache, 1, ['--coordinator', url, '--coordinator-prefix', prefix]),
    ),
  );
  running.push(...started);
  return started;
}

beforeAll(async () => {
  if (!withRedis) return;
  origin = await startS3Origin(['b']);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-fleet-failures-'));
  s3 = new S3Client({
    endpoint: origin.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: TEST_CREDENTIALS,
  });
});

afterAll(async () => {
  await Promise.all(running.map(stop));
  if (!withRedis) return;
  s3.destroy();
  await origin.close();
  await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!withRedis)('a gateway fleet coordinated through Redis, when a part fails', () => {
  it("the origin fails: once one instance's breaker opens, origin requests from the others stop within 1 s", async () => {
    const prefix = testPrefix();
    const scripted = await failingOrigin(origin.url);
    try {
      await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'known.txt', Body: 'known' }));
      const [a, b, c] = (await gateways(scripted.url, path.join(dir, 'breaker'), REDIS_URL, prefix)) as [
        Fleet,
        Fleet,
        Fleet,
      ];
      // Healthy: every instance has seen the bucket.
      for (const g of [a, b, c]) expect((await fetch(`${g.url}/b/known.txt`)).status).toBe(200);
      scripted.fail(true);
      const failingFrom = scripted.arrivals.length;
      let status = 0;
      for (let i = 0; i < 30 && status !== 503; i++) {
        const r = await fetch(`${a.url}/b/a-only-${i}`);
        await r.arrayBuffer();
        status = r.status;
      }
      expect(status).toBe(503);
      const opened = Date.now();
      // What it took A to open its breaker; B and C, told at once, take nothing like it.
      const toOpen = scripted.arrivals.length - failingFrom;
      expect(toOpen).toBeGreaterThanOrEqual(3);
      // B and C are asked for keys nobody cached, without a pause, for 2.5 s.
      const answers: number[] = [];
      let n = 0;
      const client = async (g: Fleet): Promise<void> => {
        while (Date.now() < opened + 2_500) {
          const r = await fetch(`${g.url}/b/other-${n++}`, { headers: { connection: 'close' } });
          await r.arrayBuffer();
          answers.push(r.status);
        }
      };
      await Promise.all([b, c, b, c].map(client));
      expect(answers.length).toBeGreaterThan(10);
      expect(answers.every((s) => s === 503)).toBe(true);
      expect(scripted.arrivals.filter((t) => t > opened + 1_000)).toEqual([]);
      expect(scripted.arrivals.filter((t) => t > opened).length).toBeLessThan(toOpen);
    } finally {
      await Promise.all(running.splice(0).map(stop));
      await scripted.close();
      await dropPrefix(prefix);
    }
  }, 60_000);

  describe('Redis is killed mid-traffic', () => {
    let port: number;
    let redis: ChildProcess | undefined;

    beforeAll(async () => {
      port = await freePort();
      redis = await startRedisServer(port);
    });
    afterAll(async () => {
      if (redis) await kill(redis);
    });

    it('no client request fails, each instance alerts; Redis back: the alert resolves and coordination resumes', async () => {
      const url = `redis://127.0.0.1:${port}`;
      const proxy = await countingProxy(origin.url);
      try {
        const objects = Array.from({ length: 8 }, (_, i) => randomBytes(2 * 1024 * 1024 + i));
        for (const [i, o] of objects.entries())
          await s3.send(new PutObjectCommand({ Bucket: 'b', Key: `traffic-${i}.bin`, Body: o }));
        const fleet = await gateways(proxy.url, path.join(dir, 'redis-down'), url, 'keel');
        await expect.poll(async () => (await readFleetStatus(url)).length, { timeout: 5_000 }).toBe(3);
        let stopped = false;
        const failures: string[] = [];
        let served = 0;
        const client = async (k: number): Promise<void> => {
          for (let i = k; !stopped; i++) {
            const which = i % objects.length;
            const g = fleet[i % 3] as Fleet;
            try {
              const r = await fetch(`${g.url}/b/traffic-${which}.bin`, { headers: { connection: 'close' } });
              const got = Buffer.from(await r.arrayBuffer());
              if (r.status !== 200 || sha(got) !== sha(objects[which] as Buffer))
                failures.push(`${g.url} traffic-${which}: ${r.status}`);
              served++;
            } catch (err) {
              failures.push(`${g.url} traffic-${which}: ${(err as Error).message}`);
            }
          }
        };
        const clients = Array.from({ length: 6 }, (_, k) => client(k));
        await new Promise((r) => setTimeout(r, 1_000));
        if (redis) await kill(redis);
        redis = undefined;
        for (const g of fleet)
          await expect
            .poll(() => g.stderr(), { timeout: 10_000 })
            .toMatch(/alert firing: KeelCoordinatorUnavailable/);
        const whileDown = served;
        await new Promise((r) => setTimeout(r, 1_000));
        expect(served).toBeGreaterThan(whileDown);
        redis = await startRedisServer(port);
        for (const g of fleet)
          await expect
            .poll(() => g.stderr(), { timeout: 10_000 })
            .toMatch(/alert resolved: KeelCoordinatorUnavailable/);
        await new Promise((r) => setTimeout(r, 500));
        stopped = true;
        await Promise.all(clients);
        expect(failures).toEqual([]);
        for (const g of fleet)
          expect(g.stderr().match(/alert firing: KeelCoordinatorUnavailable/g)).toHaveLength(1);
        // Coordinating again: an uncached object asked through all three at once is fetched once.
        await expect.poll(async () => (await readFleetStatus(url)).length, { timeout: 5_000 }).toBe(3);
        const fresh = randomBytes(8 * 1024 * 1024);
        await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'after.bin', Body: fresh }));
        const before = proxy.getBytes();
        const bodies = await Promise.all(
          Array.from({ length: 12 }, async (_, i) => {
            const r = await fetch(`${(fleet[i % 3] as Fleet).url}/b/after.bin`, {
              headers: { connection: 'close' },
            });
            return sha(Buffer.from(await r.arrayBuffer()));
          }),
        );
        expect(new Set(bodies)).toEqual(new Set([sha(fresh)]));
        expect(proxy.getBytes() - before).toBeLessThanOrEqual(fresh.length * 1.05);
      } finally {
        await Promise.all(running.splice(0).map(stop));
        await proxy.close();
      }
    }, 60_000);
  });
});
