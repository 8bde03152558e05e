import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { pino } from 'pino';
import { expect } from 'vitest';
import { chaos, type ChaosProxy, type FaultyFs } from 'keel/chaos';
import { resolveGatewayConfig, runGateway, type RunningGateway, type RunOptions } from '@keel/gateway';
import type { Alert, HealthReport } from '@keel/ops';
import type { VirtualClock } from 'keel';
import { originClient } from './gateway-protocol-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

/**
 * Gateways started the way `keel gateway` starts them (runGateway with a resolved config), in
 * front of one s3rver holding a.bin, c.bin and d.bin in bucket `b`, each with its own cache
 * directory and alerts file.
 */
export interface RunHarness {
  origin: S3Origin;
  /** The chaos proxy between the gateways and the origin, when asked for. */
  proxy: ChaosProxy | undefined;
  /** The objects at the origin by key. */
  data: Map<string, Buffer>;
  /** A directory for the test's own files (removed by close). */
  dir: string;
  /** Starts a gateway; `flags` as the CLI takes them (they override the harness's). */
  start(flags?: Record<string, string>, extra?: RunOptions): Promise<RunningGateway>;
  /** The alerts file of a gateway started here. */
  alertsFile(r: RunningGateway): string;
  read(r: RunningGateway, key: string): Promise<{ status: number; cache: string | null; body: Buffer }>;
  /** Reads `key`, expects a 200 with the origin's bytes, and answers `x-keel-cache`. */
  readOk(r: RunningGateway, key: string): Promise<string | null>;
  /**
   * Makes the cache's disk refuse writes (ENOSPC through `fs`, the gateway's `cacheFs`) and reads
   * c.bin until the cache is in bypass; answers the function that gives the disk back.
   */
  fillDisk(r: RunningGateway, fs: FaultyFs): Promise<() => void>;
  /** Shuts every gateway down, then the proxy and the origin; removes the files. */
  close(): Promise<void>;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export async function startRunHarness(options: { name: string; proxy?: boolean }): Promise<RunHarness> {
  const origin = await startS3Origin(['b']);
  const proxy = options.proxy ? await chaos.proxy({ upstream: `127.0.0.1:${origin.port}` }) : undefined;
  const root = await mkdtemp(path.join(os.tmpdir(), `keel-gw-${options.name}-`));
  const data = new Map<string, Buffer>();
  const s3 = originClient(origin);
  for (const [key, size] of [
    ['a.bin', 300_000],
    ['c.bin', 200_000],
    ['d.bin', 150_000],
  ] as const) {
    const body = randomBytes(size);
    data.set(key, body);
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: body }));
  }
  s3.destroy();
  const running: RunningGateway[] = [];
  const alertsFiles = new WeakMap<RunningGateway, string>();
  let n = 0;
  const read: RunHarness['read'] = async (r, key) => {
    const res = await fetch(`${r.gateway.url()}/b/${key}`);
    return {
      status: res.status,
      cache: res.headers.get('x-keel-cache'),
      body: Buffer.from(await res.arrayBuffer()),
    };
  };
  const readOk: RunHarness['readOk'] = async (r, key) => {
    const got = await read(r, key);
    expect(got.status).toBe(200);
    expect(sha(got.body)).toBe(sha(data.get(key) as Buffer));
    return got.cache;
  };
  return {
    origin,
    proxy,
    data,
    dir: root,
    start: async (flags = {}, extra = {}) => {
      n++;
      const alertsFile = flags.alertsFile ?? path.join(root, `alerts-${n}.jsonl`);
      const config = resolveGatewayConfig(
        {
          upstream: proxy ? `http://127.0.0.1:${proxy.port}` : origin.url,
          auth: 'anonymous',
          listen: '0',
          admin: '0',
          cacheDir: path.join(root, `cache-${n}`),
          sliceBytes: '64KiB',
          originAccessKeyId: TEST_CREDENTIALS.accessKeyId,
          originSecretAccessKey: TEST_CREDENTIALS.secretAccessKey,
          alerts: 'file',
          alertsFile,
          ...flags,
        },
        {},
      );
      // Silent unless the test reads the log itself.
      const quiet =
        extra.logDestination === undefined ? { log: () => undefined, logger: pino({ level: 'silent' }) } : {};
      const r = await runGateway(config, { ...quiet, defaultMetrics: false, ...extra });
      running.push(r);
      alertsFiles.set(r, alertsFile);
      return r;
    },
    alertsFile: (r) => alertsFiles.get(r) ?? '',
    read,
    readOk,
    fillDisk: async (r, fs) => {
      const stop = fs.inject({
        code: 'ENOSPC',
        ops: ['open', 'write', 'writeFile', 'sync', 'rename', 'mkdir'],
      });
      await readOk(r, 'c.bin');
      await r.gateway.idle();
      await readOk(r, 'c.bin');
      expect(r.gateway.cache?.bypassed).toBe(true);
      return stop;
    },
    close: async () => {
      for (const r of running) await r.shutdown();
      await proxy?.close();
      await origin.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** A gateway's readiness answer (`/health/ready` on its admin port). */
export async function ready(
  r: RunningGateway,
): Promise<{ status: number; type: string | null; report: HealthReport }> {
  const res = await fetch(`${r.admin.url}/health/ready`);
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    report: (await res.json()) as HealthReport,
  };
}

/** The status of check `name` in a health report. */
export const checkStatus = (report: HealthReport, name: string): string | undefined =>
  report.checks[name]?.[0]?.status;

/** The alerts a gateway's `file` handler wrote, once its handlers are flushed. */
export async function fileAlerts(r: RunningGateway, file: string): Promise<Alert[]> {
  await r.alerts.flush();
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Alert);
}

/**
 * Waits until `cond` holds for what the test cannot advance (file I/O, sockets, a probe's
 * writes), a bounded number of turns, no timing assertion. With `clock`, each turn first lets the
 * gateway's timers that are due fire.
 */
export async function until(cond: () => boolean, what: string, clock?: VirtualClock): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) {
    if (clock) await clock.advance(0);
    if (!cond()) await new Promise((r) => setTimeout(r, 10));
  }
  if (!cond()) throw new Error(`never happened: ${what}`);
}
