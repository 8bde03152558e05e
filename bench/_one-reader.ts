/**
 * The "one reader" section of bench/gateway.ts: one client reads a whole large object, cold and
 * warm, through keel, through nginx's slice cache and directly from the origin, several objects
 * each; medians and throughput ratios. Then the same cold reads with the origin behind a chaos
 * proxy that limits each connection's bandwidth, as one S3 connection is limited.
 */
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chaos } from 'keel/chaos';

/** What the section takes from bench/gateway.ts. */
export interface OneReaderParts {
  originPort: number;
  root: string;
  /** Random-looking bytes of `size`, the same for the same seed. */
  bytes(seed: string, size: number): Buffer;
  put(base: string, key: string, body: Buffer): Promise<void>;
  startKeel(upstream: string, cacheDir: string): Promise<{ url: string; proc: ChildProcess }>;
  startNginx(upstreamPort: number, dir: string, slice: string): Promise<{ url: string; proc: ChildProcess }>;
  stop(proc: ChildProcess): Promise<void>;
}

/** Object size (KEEL_BENCH_ONE_READER_MIB, default 256 MiB). */
const OBJECT_BYTES = Number(process.env.KEEL_BENCH_ONE_READER_MIB ?? 256) * 1024 * 1024;
/** Objects read each way (KEEL_BENCH_ONE_READER_OBJECTS, default 5). */
const OBJECTS = Number(process.env.KEEL_BENCH_ONE_READER_OBJECTS ?? 5);
/** Per-connection bandwidth of the limited origin, KB/s (1 KB = 1000 bytes): 50 MB/s. */
const LIMIT_KB_PER_SECOND = Number(process.env.KEEL_BENCH_ONE_READER_LIMIT_KBPS ?? 50_000);
/** nginx's slice size, as keel's default slice. */
const NGINX_SLICE = '8m';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/**
 * GETs `url` whole and times it; every byte is compared with `want` as it arrives (a memcmp: it
 * costs the client little next to the transfer). Resolves with seconds and `x-keel-cache`.
 */
function timedGet(url: string, want: Buffer): Promise<{ seconds: number; cache: string | undefined }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    http
      .get(url, { agent: false }, (res) => {
        let at = 0;
        let wrong: string | undefined;
        res.on('data', (d: Buffer) => {
          if (wrong === undefined && !d.equals(want.subarray(at, at + d.length)))
            wrong = `wrong bytes at ${at} from ${url}`;
          at += d.length;
        });
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`${url}: HTTP ${res.statusCode}`));
          if (wrong !== undefined) return reject(new Error(wrong));
          if (at !== want.length) return reject(new Error(`${url}: ${at} bytes of ${want.length}`));
          resolve({ seconds: (performance.now() - t0) / 1000, cache: res.headers['x-keel-cache'] as string });
        });
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const mbps = (seconds: number): number => OBJECT_BYTES / 1e6 / seconds;

export async function oneReader(parts: OneReaderParts): Promise<Record<string, unknown>> {
  const { originPort, root } = parts;
  if (!(OBJECTS >= 1) || !(OBJECT_BYTES > 0))
    throw new Error('one reader: objects and size must be positive');
  // One process: this section is about one reader, not about workers sharing the port.
  process.env.KEEL_WORKERS = '1';
  const loadBefore = os.loadavg();
  const origin = `http://127.0.0.1:${originPort}`;
  const keys = Array.from({ length: OBJECTS }, (_, i) => `one-reader-${i}.bin`);
  for (const k of keys) {
    console.log(`one reader: storing ${k} (${OBJECT_BYTES} bytes)`);
    await parts.put(origin, k, parts.bytes(k, OBJECT_BYTES));
  }
  const started: ChildProcess[] = [];
  try {
    // 1. Origin on loopback: cold and warm, keel and nginx taking turns to go first.
    const keel = await parts.startKeel(origin, path.join(root, 'one-reader-keel'));
    started.push(keel.proc);
    const nginx = await parts.startNginx(originPort, path.join(root, 'one-reader-nginx'), NGINX_SLICE);
    started.push(nginx.proc);
    const t = { direct: [] as number[], keelCold: [] as number[], nginxCold: [] as number[] };
    const warm = { keel: [] as number[], nginx: [] as number[] };
    const labels = { cold: new Set<string>(), warm: new Set<string>() };
    for (const [i, k] of keys.entries()) {
      console.log(`one reader: ${k}, origin on loopback`);
      const want = parts.bytes(k, OBJECT_BYTES);
      t.direct.push((await timedGet(`${origin}/demo/${k}`, want)).seconds);
      const order = i % 2 === 0 ? (['keel', 'nginx'] as const) : (['nginx', 'keel'] as const);
      for (const who of order) {
        if (who === 'keel') {
          const r = await timedGet(`${keel.url}/demo/${k}`, want);
          t.keelCold.push(r.seconds);
          labels.cold.add(r.cache ?? '-');
        } else t.nginxCold.push((await timedGet(`${nginx.url}/demo/${k}`, want)).seconds);
      }
      // keel's cache writes run behind the stream: let them land so the warm read is from disk.
      await new Promise((r) => setTimeout(r, 3_000));
      for (const who of order) {
        if (who === 'keel') {
          const r = await timedGet(`${keel.url}/demo/${k}`, want);
          warm.keel.push(r.seconds);
          labels.warm.add(r.cache ?? '-');
        } else warm.nginx.push((await timedGet(`${nginx.url}/demo/${k}`, want)).seconds);
      }
    }
    await Promise.all(started.splice(0).map((p) => parts.stop(p)));
    const loopback = {
      directMedianS: median(t.direct),
      keelColdMedianS: median(t.keelCold),
      nginxColdMedianS: median(t.nginxCold),
      keelWarmMedianS: median(warm.keel),
      nginxWarmMedianS: median(warm.nginx),
      directMBps: mbps(median(t.direct)),
      keelColdMBps: mbps(median(t.keelCold)),
      nginxColdMBps: mbps(median(t.nginxCold)),
      keelWarmMBps: mbps(median(warm.keel)),
      nginxWarmMBps: mbps(median(warm.nginx)),
      // Throughput ratios (above 1: keel moves the object faster).
      keelColdOverNginx: median(t.nginxCold) / median(t.keelCold),
      keelColdOverDirect: median(t.direct) / median(t.keelCold),
      keelWarmOverNginx: median(warm.nginx) / median(warm.keel),
      keelLabels: { cold: [...labels.cold], warm: [...labels.warm] },
      seconds: { ...t, keelWarm: warm.keel, nginxWarm: warm.nginx },
      target: 'cold keelColdOverNginx ≥ 1.0; warm keelWarmOverNginx ≥ 0.8',
    };

    // 2. The origin behind a proxy that limits each connection: fresh keel and nginx, cold reads.
    const limited = await chaos.proxy({ upstream: `127.0.0.1:${originPort}` });
    limited.add({ type: 'bandwidth', name: 'per-connection', attributes: { rate: LIMIT_KB_PER_SECOND } });
    const limitedUrl = `http://127.0.0.1:${limited.port}`;
    try {
      const lKeel = await parts.startKeel(limitedUrl, path.join(root, 'one-reader-keel-limited'));
      started.push(lKeel.proc);
      const lNginx = await parts.startNginx(
        limited.port,
        path.join(root, 'one-reader-nginx-limited'),
        NGINX_SLICE,
      );
      started.push(lNginx.proc);
      const l = { direct: [] as number[], keel: [] as number[], nginx: [] as number[] };
      for (const [i, k] of keys.entries()) {
        console.log(`one reader: ${k}, origin limited to ${LIMIT_KB_PER_SECOND / 1000} MB/s per connection`);
        const want = parts.bytes(k, OBJECT_BYTES);
        l.direct.push((await timedGet(`${limitedUrl}/demo/${k}`, want)).seconds);
        const order = i % 2 === 0 ? (['keel', 'nginx'] as const) : (['nginx', 'keel'] as const);
        for (const who of order)
          l[who].push((await timedGet(`${who === 'keel' ? lKeel.url : lNginx.url}/demo/${k}`, want)).seconds);
      }
      await Promise.all(started.splice(0).map((p) => parts.stop(p)));
      return {
        objectBytes: OBJECT_BYTES,
        objects: OBJECTS,
        nginxSlice: NGINX_SLICE,
        keelReadAheadSlices: process.env.KEEL_READ_AHEAD_SLICES ?? 'default (4)',
        loopback,
        bandwidthLimited: {
          perConnectionMBps: LIMIT_KB_PER_SECOND / 1000,
          directMedianS: median(l.direct),
          keelColdMedianS: median(l.keel),
          nginxColdMedianS: median(l.nginx),
          directMBps: mbps(median(l.direct)),
          keelColdMBps: mbps(median(l.keel)),
          nginxColdMBps: mbps(median(l.nginx)),
          keelOverDirect: median(l.direct) / median(l.keel),
          nginxOverDirect: median(l.direct) / median(l.nginx),
          keelOverNginx: median(l.nginx) / median(l.keel),
          seconds: l,
          target: 'keelOverDirect ≥ 3 (4 slices in flight: at most 4)',
        },
        loadAverage: { before: loadBefore, after: os.loadavg() },
      };
    } finally {
      await limited.close();
    }
  } finally {
    await Promise.all(started.map((p) => parts.stop(p)));
  }
}
