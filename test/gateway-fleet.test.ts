import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFleetStatus } from '@keel/fleet';
import { countingProxy, startFleet, type Fleet } from './gateway-workers-support.js';
import { dropPrefix, REDIS_URL, redisReachable, testPrefix } from './redis-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

/*
 * Three gateways (real processes) on three ports, one cache directory, one Redis, the s3rver
 * origin behind a proxy that counts what it sends.
 */

const withRedis = await redisReachable();
const prefix = testPrefix();
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const huge = randomBytes(64 * 1024 * 1024);

let origin: S3Origin;
let proxy: Awaited<ReturnType<typeof countingProxy>>;
let dir: string;
let s3: S3Client;
const running: Fleet[] = [];

/** One gateway of the fleet (a process of its own). */
async function instance(extra: string[] = []): Promise<Fleet> {
  const g = await startFleet(proxy.url, dir, 1, [
    '--coordinator',
    REDIS_URL,
    '--coordinator-prefix',
    prefix,
    ...extra,
  ]);
  running.push(g);
  return g;
}

async function stop(g: Fleet): Promise<void> {
  if (g.proc.exitCode === null && g.proc.signalCode === null) {
    g.proc.kill('SIGKILL');
    await g.exited;
  }
}

async function get(url: string): Promise<{ status: number; sha: string }> {
  const r = await fetch(url, { headers: { connection: 'close' } });
  return { status: r.status, sha: sha(Buffer.from(await r.arrayBuffer())) };
}

/**
 * A GET's status and whether its body is `expected`, compared as it streams: 150 bodies of
 * 64 MiB are neither held at once nor hashed (the test process also runs the origin).
 */
async function getSame(url: string, expected: Buffer): Promise<{ status: number; same: boolean }> {
  const r = await fetch(url, { headers: { connection: 'close' } });
  let at = 0;
  let same = true;
  if (r.body)
    for await (const chunk of r.body) {
      const part = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      same &&= at + part.length <= expected.length && part.equals(expected.subarray(at, at + part.length));
      at += part.length;
    }
  return { status: r.status, same: same && at === expected.length };
}

beforeAll(async () => {
  if (!withRedis) return;
  origin = await startS3Origin(['b']);
  proxy = await countingProxy(origin.url);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-fleet-'));
  s3 = new S3Client({
    endpoint: origin.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: TEST_CREDENTIALS,
  });
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'huge.bin', Body: huge }));
});

afterAll(async () => {
  await Promise.all(running.map(stop));
  if (!withRedis) return;
  s3.destroy();
  await proxy.close();
  await origin.close();
  await rm(dir, { recursive: true, force: true });
  await dropPrefix(prefix);
});

describe.skipIf(!withRedis)('three gateways coordinated through Redis (--coordinator)', () => {
  let a: Fleet;
  let b: Fleet;
  let c: Fleet;

  beforeAll(async () => {
    [a, b, c] = await Promise.all([instance(), instance(), instance()]);
  });

  it('lists the three in keel fleet status, as a table and as JSON', async () => {
    await expect
      // Listening: a heartbeat sent before names port 0.
      .poll(async () => (await readFleetStatus(REDIS_URL, prefix)).filter((i) => i.port > 0).length, {
        timeout: 5_000,
      })
      .toBe(3);
    const run = (...args: string[]): string => {
      const out = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          'packages/gateway/src/cli/main.ts',
          'fleet',
          'status',
          '--coordinator',
          REDIS_URL,
          '--coordinator-prefix',
          prefix,
          ...args,
        ],
        { encoding: 'utf8' },
      );
      expect(out.stderr).toBe('');
      expect(out.status).toBe(0);
      return out.stdout;
    };
    const json = JSON.parse(run('--json')) as { port: number; pid: number; health: string }[];
    expect(json.map((i) => i.pid).sort()).toEqual([a, b, c].map((g) => g.proc.pid).sort());
    expect(json.map((i) => i.port).sort()).toEqual([a, b, c].map((g) => Number(new URL(g.url).port)).sort());
    const table = run();
    expect(table.split('\n')[0]).toMatch(/^ID\s+ADDRESS\s+PID\s+HEALTH/);
    for (const g of [a, b, c]) expect(table).toContain(`:${new URL(g.url).port} `);
  });

  it("shows the three on each one's dashboard, one row per instance from the heartbeats", async () => {
    const snapshot = (await (await fetch(`${b.admin}/dashboard/snapshot`)).json()) as {
      views: { id: string; panels: { kind: string; rows?: { cells: unknown[] }[] }[] }[];
    };
    const view = snapshot.views.find((v) => v.id === 'fleet-instances');
    const rows = view?.panels[0]?.rows ?? [];
    expect(rows).toHaveLength(3);
    // PID is the third column; the instance answering is marked.
    expect(rows.map((r) => Number(r.cells[2])).sort()).toEqual([a, b, c].map((g) => g.proc.pid).sort());
    const marked = rows.filter((r) => String(r.cells[0]).endsWith('(this one)'));
    expect(marked.map((r) => Number(r.cells[2]))).toEqual([b.proc.pid]);
  });

  it('150 clients spread over the three on one uncached 64 MiB object: every body identical, origin bytes ≤ 1.05 × size', async () => {
    const before = proxy.getBytes();
    const gateways = [a, b, c];
    const results = await Promise.all(
      Array.from({ length: 150 }, (_, i) => getSame(`${(gateways[i % 3] as Fleet).url}/b/huge.bin`, huge)),
    );
    for (const r of results) expect(r).toEqual({ status: 200, same: true });
    const fetched = proxy.getBytes() - before;
    expect(fetched).toBeGreaterThanOrEqual(huge.length);
    expect(fetched).toBeLessThanOrEqual(huge.length * 1.05);
  }, 240_000);

  it('a PUT through A, then reads through B and C at once: never the old bytes', async () => {
    const old = randomBytes(300_000);
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'changed.bin', Body: old }));
    // Every instance has the old version cached and known.
    for (const g of [a, b, c])
      expect(await get(`${g.url}/b/changed.bin`)).toEqual({ status: 200, sha: sha(old) });
    for (let round = 0; round < 5; round++) {
      const fresh = randomBytes(300_000 + round);
      const put = await fetch(`${a.url}/b/changed.bin`, { method: 'PUT', body: fresh });
      expect(put.status).toBe(200);
      const reads = await Promise.all(
        Array.from({ length: 10 }, (_, i) => get(`${(i % 2 === 0 ? b : c).url}/b/changed.bin`)),
      );
      for (const r of reads) expect(r).toEqual({ status: 200, sha: sha(fresh) });
    }
  });

  it("SIGKILL of the instance holding the fills: the others' waiters finish within the lease, bytes identical; restarted, it rejoins", async () => {
    const body = randomBytes(16 * 1024 * 1024);
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'killed.bin', Body: body }));
    // A asks first and its origin answer is held back: it holds the object's leases when it dies.
    proxy.delayNextGet(4_000);
    const first = get(`${a.url}/b/killed.bin`).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const waiting = Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        get(`${(i % 2 === 0 ? b : c).url}/b/killed.bin`).then((r) => ({ ...r, ms: Date.now() - started })),
      ),
    );
    await new Promise((r) => setTimeout(r, 300));
    await stop(a);
    await first;
    const results = await waiting;
    for (const r of results) {
      expect({ status: r.status, sha: r.sha }).toEqual({ status: 200, sha: sha(body) });
      // The lease lives 5 s past its last renewal; then a follower fetches 16 MiB on loopback.
      expect(r.ms).toBeLessThan(5_000 + 5_000);
    }
    const again = await instance();
    await expect
      .poll(async () => (await readFleetStatus(REDIS_URL, prefix)).map((i) => i.pid), { timeout: 5_000 })
      .toContain(again.proc.pid);
    expect(await get(`${again.url}/b/killed.bin`)).toEqual({ status: 200, sha: sha(body) });
    a = again;
  }, 60_000);
});

describe.skipIf(!withRedis)('--coordinator with --workers', () => {
  it('makes each worker an instance of the fleet; the primary shows keel_gateway_coordinator_up 1', async () => {
    const own = testPrefix();
    const fleet = await startFleet(proxy.url, path.join(dir, 'workers'), 2, [
      '--coordinator',
      REDIS_URL,
      '--coordinator-prefix',
      own,
    ]);
    running.push(fleet);
    try {
      await expect
        .poll(async () => (await readFleetStatus(REDIS_URL, own)).filter((w) => w.port > 0).length, {
          timeout: 10_000,
        })
        .toBe(2);
      const workers = await readFleetStatus(REDIS_URL, own);
      // Both workers serve the one port their primary shares.
      expect(new Set(workers.map((w) => w.port))).toEqual(new Set([Number(new URL(fleet.url).port)]));
      expect(workers.map((w) => w.pid)).not.toContain(fleet.proc.pid);
      const metrics = await (await fetch(`${fleet.admin}/metrics`)).text();
      expect(metrics).toMatch(/^keel_gateway_coordinator_up 1$/m);
      fleet.proc.kill('SIGTERM');
      expect(await fleet.exited).toBe(0);
      // Each worker removed its heartbeat as it stopped.
      expect(await readFleetStatus(REDIS_URL, own)).toEqual([]);
    } finally {
      await stop(fleet);
      await dropPrefix(own);
    }
  }, 60_000);
});
