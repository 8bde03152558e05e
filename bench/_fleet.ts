/**
 * The "fleet" section of bench/gateway.ts: three keel gateways on one cache directory coordinated
 * through Redis (--coordinator) against three nginx instances sharing nothing (what users run
 * today) and against one nginx: origin bytes / object size when 150 clients, spread over the
 * instances, ask at once for one uncached 64 MiB object. Then the cost of coordination: miss time
 * to first byte and hit latency of one keel with --coordinator against one without.
 * Needs Redis on 127.0.0.1:6379 (KEEL_BENCH_REDIS_URL); its keys go under a prefix of their own.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chaos } from 'keel/chaos';

/** What the section takes from bench/gateway.ts. */
export interface FleetParts {
  originPort: number;
  root: string;
  bytes(seed: string, size: number): Buffer;
  put(base: string, key: string, body: Buffer): Promise<void>;
  startKeel(
    upstream: string,
    cacheDir: string,
    workers?: number,
    extra?: string[],
  ): Promise<{ url: string; proc: ChildProcess }>;
  startNginx(
    upstreamPort: number,
    dir: string,
    slice?: string,
    workers?: number,
  ): Promise<{ url: string; proc: ChildProcess }>;
  stop(proc: ChildProcess): Promise<void>;
}

const OBJECT = 64 * 1024 * 1024;
const CLIENTS = 150;
const REDIS_URL = process.env.KEEL_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Fresh 1 MiB objects for the miss latency (the first few warm up, not counted). */
const MISS_OBJECTS = 25;
const MISS_WARMUP = 5;
/** Sequential hits of a cached range, each way. */
const HITS = 400;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)] ?? NaN;

/** GETs `url` whole: sha256 of the body and the time to its first byte (ms). */
function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ sha: string; ttfbMs: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    http
      .get(url, { headers, agent: false }, (res) => {
        let ttfb = -1;
        const h = createHash('sha256');
        res.on('data', (d: Buffer) => {
          if (ttfb < 0) ttfb = performance.now() - t0;
          h.update(d);
        });
        res.on('end', () => {
          if ((res.statusCode ?? 0) >= 300) return reject(new Error(`${url}: HTTP ${res.statusCode}`));
          resolve({ sha: h.digest('hex'), ttfbMs: ttfb, ms: performance.now() - t0 });
        });
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** A keep-alive GET loop: latency (ms) of each of `n` GETs of one range. */
async function hitLatencies(url: string, range: string, n: number): Promise<number[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const out: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await new Promise<void>((resolve, reject) => {
        http
          .get(url, { headers: { range }, agent }, (res) => {
            res.resume();
            res.on('end', () =>
              res.statusCode === 206 ? resolve() : reject(new Error(`${url}: ${res.statusCode}`)),
            );
            res.on('error', reject);
          })
          .on('error', reject);
      });
      out.push(performance.now() - t0);
    }
  } finally {
    agent.destroy();
  }
  return out;
}

export async function fleet(parts: FleetParts): Promise<Record<string, unknown>> {
  const { originPort, root } = parts;
  const loadAverageAtStart = os.loadavg();
  const origin = `http://127.0.0.1:${originPort}`;
  const prefix = `keel-bench-${randomBytes(4).toString('hex')}`;
  const coordinator = ['--coordinator', REDIS_URL, '--coordinator-prefix', prefix];
  const started: ChildProcess[] = [];
  const proxies: Awaited<ReturnType<typeof chaos.proxy>>[] = [];
  const counting = async (): Promise<Awaited<ReturnType<typeof chaos.proxy>>> => {
    const p = await chaos.proxy({ upstream: `127.0.0.1:${originPort}` });
    proxies.push(p);
    return p;
  };
  try {
    // 1. Stampede: one counting proxy per group, so each group's origin bytes are its own.
    const keelProxy = await counting();
    const nginx3Proxy = await counting();
    const nginx1Proxy = await counting();
    const sharedDir = path.join(root, 'fleet-keel');
    const keels = [];
    for (let i = 0; i < 3; i++) {
      const k = await parts.startKeel(`http://127.0.0.1:${keelProxy.port}`, sharedDir, 1, coordinator);
      started.push(k.proc);
      keels.push(k);
    }
    const nginxes = [];
    for (let i = 0; i < 3; i++) {
      const n = await parts.startNginx(nginx3Proxy.port, path.join(root, `fleet-nginx-${i}`), '1m', 1);
      started.push(n.proc);
      nginxes.push(n);
    }
    const nginx1 = await parts.startNginx(nginx1Proxy.port, path.join(root, 'fleet-nginx-one'), '1m', 1);
    started.push(nginx1.proc);
    const stampede = async (
      urls: string[],
      key: string,
      proxy: Awaited<ReturnType<typeof chaos.proxy>>,
    ): Promise<Record<string, unknown>> => {
      const body = parts.bytes(key, OBJECT);
      await parts.put(origin, key, body);
      const want = createHash('sha256').update(body).digest('hex');
      const before = proxy.stats().bytesDownstream;
      const t0 = performance.now();
      const all = await Promise.all(
        Array.from({ length: CLIENTS }, (_, i) => get(`${urls[i % urls.length] as string}/demo/${key}`)),
      );
      return {
        instances: urls.length,
        originBytesOverSize: (proxy.stats().bytesDownstream - before) / OBJECT,
        allIdentical: all.every((r) => r.sha === want),
        seconds: (performance.now() - t0) / 1000,
      };
    };
    const stampedes = {
      keel3: await stampede(
        keels.map((k) => k.url),
        'fleet-stampede-keel.bin',
        keelProxy,
      ),
      nginx3: await stampede(
        nginxes.map((n) => n.url),
        'fleet-stampede-nginx3.bin',
        nginx3Proxy,
      ),
      nginx1: await stampede([nginx1.url], 'fleet-stampede-nginx1.bin', nginx1Proxy),
      target: 'keel3 ≤ 1.05 (one origin fetch per slice across the fleet)',
    };
    await Promise.all(started.splice(0).map((c) => parts.stop(c)));

    // 2. The cost of coordination: one keel with --coordinator, one without, taking turns.
    const withProxy = await counting();
    const withoutProxy = await counting();
    const withC = await parts.startKeel(
      `http://127.0.0.1:${withProxy.port}`,
      path.join(root, 'fleet-with'),
      1,
      [...coordinator.slice(0, 3), `${prefix}-cost`],
    );
    started.push(withC.proc);
    const withoutC = await parts.startKeel(
      `http://127.0.0.1:${withoutProxy.port}`,
      path.join(root, 'fleet-without'),
      1,
    );
    started.push(withoutC.proc);
    const keys = Array.from({ length: MISS_OBJECTS }, (_, i) => `fleet-miss-${i}.bin`);
    for (const k of keys) await parts.put(origin, k, parts.bytes(k, 1024 * 1024));
    const miss = { with: [] as number[], without: [] as number[] };
    for (const [i, k] of keys.entries()) {
      const first = i % 2 === 0 ? 'with' : 'without';
      for (const side of first === 'with' ? (['with', 'without'] as const) : (['without', 'with'] as const)) {
        const r = await get(`${side === 'with' ? withC.url : withoutC.url}/demo/${k}`);
        if (i >= MISS_WARMUP) miss[side].push(r.ttfbMs);
      }
    }
    const range = 'bytes=0-65535';
    const hits = { with: [] as number[], without: [] as number[] };
    for (let round = 0; round < 4; round++)
      for (const side of round % 2 === 0 ? (['with', 'without'] as const) : (['without', 'with'] as const))
        hits[side].push(
          ...(await hitLatencies(
            `${side === 'with' ? withC.url : withoutC.url}/demo/${keys[0] as string}`,
            range,
            HITS / 4,
          )),
        );
    const cost = {
      missTtfbMs: {
        withCoordinator: median(miss.with),
        without: median(miss.without),
        ratio: median(miss.with) / median(miss.without),
      },
      hitLatencyMs: {
        withCoordinator: { p50: median(hits.with), p99: p99(hits.with) },
        without: { p50: median(hits.without), p99: p99(hits.without) },
        p50Ratio: median(hits.with) / median(hits.without),
      },
      objects: miss.with.length,
      hits: hits.with.length,
    };
    return {
      stampede: stampedes,
      coordinationCost: cost,
      redis: 'local Redis on loopback',
      loadAverageAtStart,
      loadAverageAtEnd: os.loadavg(),
    };
  } finally {
    await Promise.all(started.map((c) => parts.stop(c)));
    for (const p of proxies) await p.close();
  }
}
