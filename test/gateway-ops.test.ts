import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { faultyFs, type ChaosProxy } from 'keel/chaos';
import type { RunningGateway, RunOptions } from '@keel/gateway';
import type { Alert, HealthReport } from '@keel/ops';
import { VirtualClock } from 'keel';
import {
  checkStatus,
  fileAlerts,
  ready,
  startRunHarness,
  until,
  type RunHarness,
} from './gateway-run-support.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const TOKEN = 'admin-token-0123456789';
let harness: RunHarness;
let proxy: ChaosProxy;

beforeAll(async () => {
  harness = await startRunHarness({ name: 'ops', proxy: true });
  proxy = harness.proxy as ChaosProxy;
});

afterEach(async () => {
  if (!proxy.enabled) await proxy.enable();
});

afterAll(async () => {
  await harness.close();
});

const start = (flags: Record<string, string> = {}, extra: RunOptions = {}): Promise<RunningGateway> =>
  harness.start(flags, extra);
const read = (r: RunningGateway, key: string): ReturnType<RunHarness['read']> => harness.read(r, key);
const readOk = (r: RunningGateway, key: string): Promise<string | null> => harness.readOk(r, key);

/** The alerts in `file`, by name and status. */
async function alertStates(r: RunningGateway, file: string): Promise<Pick<Alert, 'name' | 'status'>[]> {
  return (await fileAlerts(r, file)).map(({ name, status }) => ({ name, status }));
}

describe('gateway operations', () => {
  it('raises KeelCacheBypass and KeelCacheDiskFull when the disk fills, keeps serving, and resolves on recovery', async () => {
    const fs = faultyFs();
    const clock = new VirtualClock(Date.now());
    const r = await start(
      {},
      { cacheFs: fs, clock, cacheBypassProbeMs: 30_000, guard: { retryAttempts: 1 } },
    );
    const file = harness.alertsFile(r);
    expect(await readOk(r, 'a.bin')).toBe('MISS');
    await r.gateway.idle();
    expect(await readOk(r, 'a.bin')).toBe('HIT');
    let h = await ready(r);
    expect(h.status).toBe(200);
    expect(h.type).toBe('application/health+json');
    expect(h.report.status).toBe('pass');
    expect(checkStatus(h.report, 'cache:writable')).toBe('pass');

    const stop = await harness.fillDisk(r, fs);
    expect(await readOk(r, 'd.bin')).toBe('BYPASS');
    const firing = r.alerts.firing().map((a) => a.name);
    expect(firing).toContain('KeelCacheBypass');
    expect(firing).toContain('KeelCacheDiskFull');
    expect(await alertStates(r, file)).toEqual(
      expect.arrayContaining([
        { name: 'KeelCacheBypass', status: 'firing' },
        { name: 'KeelCacheDiskFull', status: 'firing' },
      ]),
    );
    h = await ready(r);
    expect(h.status).toBe(200); // the gateway still serves: readiness warns, it does not fail
    expect(h.report.status).toBe('warn');
    expect(checkStatus(h.report, 'cache:writable')).toBe('fail');
    const metrics = await (await fetch(`${r.admin.url}/metrics`)).text();
    expect(metrics).toMatch(/^keel_gateway_cache_bypass 1$/m);
    expect(metrics).toMatch(/^keel_cache_disk_full_events_total [1-9]/m);

    stop();
    await clock.advance(30_000); // the cache's probe runs and finds the disk usable
    await until(() => r.gateway.cache?.bypassed === false, 'cache leaves bypass');
    expect(r.alerts.firing().map((a) => a.name)).not.toContain('KeelCacheBypass');
    expect(await alertStates(r, file)).toEqual(
      expect.arrayContaining([
        { name: 'KeelCacheBypass', status: 'resolved' },
        { name: 'KeelCacheDiskFull', status: 'resolved' },
      ]),
    );
    h = await ready(r);
    expect(h.report.status).toBe('pass');
    expect(checkStatus(h.report, 'cache:writable')).toBe('pass');
    await readOk(r, 'd.bin');
  });

  it('counts cache I/O errors on /metrics, warns on cache:writable, bypasses past the threshold with KeelCacheBypass, and resumes after a quiet window', async () => {
    const fs = faultyFs();
    const clock = new VirtualClock(Date.now());
    // Every read goes to the disk cache (no memory tier), where the errors are.
    const r = await start({}, { cacheFs: fs, clock, cacheBypassProbeMs: 30_000, memoryCacheBytes: 0 });
    const cache = r.gateway.cache;
    if (!cache) throw new Error('no cache');
    const file = harness.alertsFile(r);
    const ioErrors = async (): Promise<number> => {
      const text = await (await fetch(`${r.admin.url}/metrics`)).text();
      return Number(/^keel_cache_io_errors_total\{operation="read"\} (\d+)$/m.exec(text)?.[1]);
    };
    expect(await readOk(r, 'a.bin')).toBe('MISS');
    await r.gateway.idle();
    expect(await readOk(r, 'a.bin')).toBe('HIT');
    expect(await ioErrors()).toBe(0);

    // The disk starts failing reads of a slice file after start: every byte still comes out right.
    const stop = fs.inject({ code: 'EIO', ops: ['open', 'read'], path: /slice-0$/ });
    await readOk(r, 'a.bin');
    const first = await ioErrors();
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(cache.ioErrorBypassThreshold);
    let h = await ready(r);
    expect(h.status).toBe(200);
    expect(checkStatus(h.report, 'cache:writable')).toBe('warn');
    expect(h.report.checks['cache:writable']?.[0]?.observedValue).toBe(first);
    expect(cache.bypassed).toBe(false);

    for (let i = 0; i < cache.ioErrorBypassThreshold && !cache.bypassed; i++) await readOk(r, 'a.bin');
    expect(cache.bypassed).toBe(true);
    expect(await ioErrors()).toBeGreaterThanOrEqual(cache.ioErrorBypassThreshold);
    expect(r.alerts.firing().map((a) => a.name)).toContain('KeelCacheBypass');
    h = await ready(r);
    expect(h.status).toBe(200);
    expect(checkStatus(h.report, 'cache:writable')).toBe('fail');
    expect(h.report.checks['cache:writable']?.[0]?.output).toMatch(/I\/O errors in the cache directory/);
    const metrics = await (await fetch(`${r.admin.url}/metrics`)).text();
    expect(metrics).toMatch(/^keel_gateway_cache_bypass 1$/m);
    expect(metrics).toMatch(/^keel_cache_io_errors_total\{operation="write"\} 0$/m);

    // The disk is well again: bypass holds until a whole window passes without an error.
    stop();
    await clock.advance(cache.ioErrorWindowMs - 1_000);
    expect(cache.bypassed).toBe(true);
    await clock.advance(30_000);
    await until(() => !cache.bypassed, 'cache leaves bypass', clock);
    expect(r.alerts.firing().map((a) => a.name)).not.toContain('KeelCacheBypass');
    expect(await alertStates(r, file)).toEqual(
      expect.arrayContaining([
        { name: 'KeelCacheBypass', status: 'firing' },
        { name: 'KeelCacheBypass', status: 'resolved' },
      ]),
    );
    h = await ready(r);
    expect(checkStatus(h.report, 'cache:writable')).toBe('pass');
    expect(await readOk(r, 'a.bin')).toBe('HIT');
  });

  it('starts in bypass when the cache directory is unusable, and sends the alert to the webhook', async () => {
    const received: { alerts: Alert[] }[] = [];
    const hook = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        received.push(JSON.parse(body) as { alerts: Alert[] });
        res.end();
      });
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    const notADir = path.join(harness.dir, 'not-a-dir');
    await writeFile(notADir, 'x');
    const r = await start({
      cacheDir: path.join(notADir, 'cache'),
      alerts: 'webhook',
      alertsWebhookUrl: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`,
    });
    expect(r.alerts.firing().map((a) => a.name)).toEqual(['KeelCacheBypass']);
    await until(() => received.length > 0, 'webhook delivery');
    expect(received[0]?.alerts.map((a) => [a.name, a.severity, a.status])).toEqual([
      ['KeelCacheBypass', 'critical', 'firing'],
    ]);
    hook.close();
    expect(await readOk(r, 'a.bin')).toBe('BYPASS');
    const h = await ready(r);
    expect(h.status).toBe(200);
    expect(checkStatus(h.report, 'cache:writable')).toBe('fail');
    expect(checkStatus(h.report, 'disk:utilization')).toBe('fail');
  });

  it('raises KeelOriginBreakerOpen during an origin outage, serves what it has, and resolves when the origin is back', async () => {
    const clock = new VirtualClock(Date.now());
    const r = await start(
      {},
      { clock, guard: { retryAttempts: 1, breakerFailures: 3, breakerHalfOpenAfterMs: 10_000 } },
    );
    const file = harness.alertsFile(r);
    expect(await readOk(r, 'a.bin')).toBe('MISS');
    await r.gateway.idle();
    await proxy.disable();
    for (let i = 0; i < 3; i++) {
      const miss = await read(r, 'c.bin');
      expect(miss.status).toBe(503);
    }
    expect(r.gateway.guard.breakerStates().b).toBe('open');
    const fast = await fetch(`${r.gateway.url()}/b/d.bin`);
    expect(fast.status).toBe(503);
    expect(fast.headers.get('retry-after')).toMatch(/^\d+$/);
    await fast.arrayBuffer();
    expect(await readOk(r, 'a.bin')).toBe('HIT');
    expect(r.alerts.firing().map((a) => [a.name, a.labels])).toEqual([
      ['KeelOriginBreakerOpen', { bucket: 'b' }],
    ]);
    let h = await ready(r);
    expect(h.status).toBe(200);
    expect(h.report.status).toBe('warn');
    expect(checkStatus(h.report, 'origin:reachable')).toBe('fail');
    const metrics = await (await fetch(`${r.admin.url}/metrics`)).text();
    expect(metrics).toMatch(/^keel_breaker_state\{breaker="b"\} 1$/m);
    expect(metrics).toMatch(/^keel_gateway_breakers\{state="open"\} 1$/m);
    expect(metrics).toMatch(/^keel_gateway_origin_requests_total\{outcome="failure"\} [3-9]/m);
    expect(metrics).toMatch(/^keel_gateway_origin_requests_total\{outcome="rejected"\} [1-9]/m);

    await proxy.enable();
    await clock.advance(10_000);
    await readOk(r, 'c.bin');
    expect(r.gateway.guard.breakerStates().b).toBe('closed');
    expect(r.alerts.firing()).toEqual([]);
    expect(await alertStates(r, file)).toEqual([
      { name: 'KeelOriginBreakerOpen', status: 'firing' },
      { name: 'KeelOriginBreakerOpen', status: 'resolved' },
    ]);
    h = await ready(r);
    expect(checkStatus(h.report, 'origin:reachable')).toBe('pass');
  });

  it('raises KeelRetryBudgetExhausted when a retry is refused for want of budget', async () => {
    const clock = new VirtualClock(Date.now());
    const r = await start({}, { clock, guard: { retryAttempts: 3, breakerFailures: 100 } });
    while (r.gateway.guard.budget.tryWithdraw()) {
      // spend the whole budget; a virtual clock refills nothing meanwhile
    }
    await proxy.disable();
    expect((await read(r, 'c.bin')).status).toBe(503);
    expect(r.alerts.firing().map((a) => a.name)).toEqual(['KeelRetryBudgetExhausted']);
    const metrics = await (await fetch(`${r.admin.url}/metrics`)).text();
    expect(metrics).toMatch(/^keel_gateway_retry_budget_exhausted_total [1-9]/m);
    expect(metrics).toMatch(/^keel_retry_give_ups_total\{policy="origin",reason="budget"\} [1-9]/m);
  });

  it('raises DiskSpaceLow, fails disk:utilization and evicts from the cache when the cache disk is critical', async () => {
    let bavail = 500;
    const statfs = (): Promise<{
      bsize: number;
      blocks: number;
      bfree: number;
      bavail: number;
      files: number;
      ffree: number;
    }> => Promise.resolve({ bsize: 4096, blocks: 1000, bfree: bavail, bavail, files: 0, ffree: 0 });
    const clock = new VirtualClock(Date.now());
    const r = await start({ diskCheckIntervalSeconds: '60' }, { clock, statfs });
    await readOk(r, 'a.bin');
    await r.gateway.idle();
    expect(r.gateway.cache?.stats().slices).toBeGreaterThan(0);
    bavail = 50; // 95 % used
    await clock.advance(60_000);
    await until(() => r.alerts.firing().some((a) => a.name === 'DiskSpaceLow'), 'DiskSpaceLow raised');
    expect(r.alerts.firing().find((a) => a.name === 'DiskSpaceLow')?.severity).toBe('critical');
    await until(() => r.gateway.cache?.stats().evictions !== 0, 'eviction after the critical level');
    const h = await ready(r);
    expect(checkStatus(h.report, 'disk:utilization')).toBe('fail');
    expect(h.report.status).toBe('warn');
    bavail = 900;
    await clock.advance(60_000);
    await until(() => r.alerts.firing().length === 0, 'DiskSpaceLow resolved');
  });

  it('backs off revalidation of an object whose origin fails by the configured start and cap', async () => {
    const clock = new VirtualClock(Date.now());
    const r = await start(
      { ttlSeconds: '10', revalidateBackoffSeconds: '5', revalidateMaxBackoffSeconds: '8' },
      { clock, guard: { retryAttempts: 1, breakerFailures: 100 } },
    );
    const started = async (): Promise<number> => {
      const text = await (await fetch(`${r.admin.url}/metrics`)).text();
      return Number(/^keel_gateway_revalidations_total\{outcome="started"\} (\d+)$/m.exec(text)?.[1]);
    };
    /** After `ms` more, a read is served STALE and `count` revalidations have started so far. */
    const staleAfter = async (ms: number, count: number): Promise<void> => {
      if (ms > 0) await clock.advance(ms);
      expect(await readOk(r, 'a.bin')).toBe('STALE');
      expect(await started()).toBe(count);
    };
    expect(await readOk(r, 'a.bin')).toBe('MISS');
    await r.gateway.idle();
    await clock.advance(10_001);
    await proxy.disable();
    await staleAfter(0, 1);
    // The first failure holds the object back 5 s (not the default 1 s)…
    await staleAfter(4_999, 1);
    await staleAfter(1, 2);
    // …the second 10 s doubled, capped at 8 s.
    await staleAfter(7_999, 2);
    await staleAfter(1, 3);
  });

  it("carries a request's id into what it causes: its log line and the breaker alert its failure raised", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const l of chunk.toString().split('\n'))
          if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    const r = await start(
      { logLevel: 'info' },
      {
        logDestination: sink,
        guard: { retryAttempts: 1, breakerFailures: 3, breakerHalfOpenAfterMs: 60_000 },
      },
    );
    await proxy.disable();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${r.gateway.url()}/b/c.bin`);
      await res.arrayBuffer();
      expect(res.status).toBe(503);
      ids.push(res.headers.get('x-request-id') ?? '');
    }
    expect(new Set(ids).size).toBe(3);
    // The third failure opened the breaker: the alert names that request.
    const alert = r.alerts.firing().find((a) => a.name === 'KeelOriginBreakerOpen');
    expect(alert?.details.correlationId).toBe(ids[2]);
    await until(() => lines.filter((l) => l.msg === 'request').length === 3, 'request lines');
    // Each request's log line carries its own id as the correlation id, and no line another's.
    for (const id of ids)
      expect(lines.filter((l) => l.correlationId === id).map((l) => [l.msg, l.requestId])).toEqual([
        ['request', id],
      ]);
    // The alert as written to the alerts file names it too.
    const written = (await fileAlerts(r, harness.alertsFile(r))).find(
      (a) => a.name === 'KeelOriginBreakerOpen',
    );
    expect(written?.details.correlationId).toBe(ids[2]);
  });

  it('writes one JSON line per request at log level info, with its request id and no presigned secrets, and none at the default level', async () => {
    const startLogged = async (
      flags: Record<string, string>,
    ): Promise<{ r: RunningGateway; lines: string[] }> => {
      const lines: string[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          lines.push(
            ...chunk
              .toString()
              .split('\n')
              .filter((l) => l !== ''),
          );
          done();
        },
      });
      const r = await harness.start({ alerts: 'none', ...flags }, { logDestination: sink });
      return { r, lines };
    };
    const signature = 'f'.repeat(64);
    const keyId = 'GATEWAYCLIENTKEY7';
    const token = 'session-token-value-123';
    const query =
      `X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${keyId}%2F20261128%2Fus-east-1%2Fs3%2Faws4_request` +
      `&X-Amz-Date=20261128T093000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host` +
      `&X-Amz-Security-Token=${token}&X-Amz-Signature=${signature}`;
    const ask = async (r: RunningGateway): Promise<string[]> => {
      const ids: string[] = [];
      for (const url of [`/b/a.bin?${query}`, '/b/missing.bin']) {
        const res = await fetch(`${r.gateway.url()}${url}`);
        await res.arrayBuffer();
        ids.push(res.headers.get('x-request-id') ?? '');
      }
      return ids;
    };

    const info = await startLogged({ logLevel: 'info' });
    const ids = await ask(info.r);
    await until(() => info.lines.filter((l) => l.includes('"msg":"request"')).length === 2, 'request lines');
    const requests = info.lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'request');
    expect(requests.map((l) => [l.requestId, l.method, l.status])).toEqual([
      [ids[0], 'GET', 200],
      [ids[1], 'GET', 404],
    ]);
    const url = String(requests[0]?.url);
    expect(url.startsWith('/b/a.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&')).toBe(true);
    expect(url).toContain('X-Amz-Date=20261128T093000Z');
    expect(url).toContain('X-Amz-Signature=[REDACTED]');
    expect(url).toContain('X-Amz-Credential=[REDACTED]');
    const all = info.lines.join('\n');
    for (const secret of [signature, keyId, token]) expect(all).not.toContain(secret);

    const quiet = await startLogged({});
    await ask(quiet.r);
    await quiet.r.shutdown();
    expect(quiet.lines.filter((l) => l.includes('"msg":"request"'))).toEqual([]);
  });

  it('leaves no timer behind when its S3 port is taken at start', async () => {
    const taken = http.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const { port } = taken.address() as AddressInfo;
    const clock = new VirtualClock();
    try {
      await expect(harness.start({ listen: `127.0.0.1:${String(port)}` }, { clock })).rejects.toMatchObject({
        code: 'ADDRESS_IN_USE',
      });
      // The scheduled cleanup and disk check would otherwise keep a library user's process alive.
      expect(clock.pendingTimers()).toBe(0);
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it('serves probes, metrics in both formats, status and cache endpoints, with the admin token where set', async () => {
    const r = await start({ adminToken: TOKEN });
    await readOk(r, 'a.bin');
    await r.gateway.idle();
    await readOk(r, 'a.bin');
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const p of ['/health/live', '/health/ready', '/livez', '/readyz', '/ready', '/live'])
      expect((await fetch(`${r.admin.url}${p}`)).status, p).toBe(200);
    expect((await fetch(`${r.admin.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${r.admin.url}/cache/cleanup`, { method: 'POST' })).status).toBe(401);
    const text = await fetch(`${r.admin.url}/metrics`, { headers: auth });
    expect(text.headers.get('content-type')).toContain('text/plain');
    const body = await text.text();
    expect(body).toMatch(/^keel_gateway_requests_total\{method="GET",outcome="HIT"\} 1$/m);
    expect(body).toMatch(/^keel_gateway_bytes_served_total\{source="cache"\} 300000$/m);
    expect(body).toMatch(/^keel_gateway_bytes_served_total\{source="origin"\} 300000$/m);
    expect(body).toContain('keel_gateway_origin_first_byte_seconds_bucket');
    const om = await fetch(`${r.admin.url}/metrics`, {
      headers: { ...auth, accept: 'application/openmetrics-text; version=1.0.0' },
    });
    expect(om.headers.get('content-type')).toContain('application/openmetrics-text');
    expect((await om.text()).trimEnd().endsWith('# EOF')).toBe(true);
    const status = (await (await fetch(`${r.admin.url}/status`, { headers: auth })).json()) as {
      repairs: Record<string, number>;
      gateway: { inFlight: number; breakers: Record<string, string> };
      cache: { hits: number };
      health: HealthReport;
      alerts: unknown[];
    };
    expect(Object.keys(status.repairs)).toEqual([
      'corruption_metadata_total',
      'corruption_missing_range_total',
      'disk_full_events_total',
      'inconsistency_fixed_total',
      'partial_write_cleanup_total',
      'orphaned_files_cleaned_total',
    ]);
    expect(status.gateway.breakers).toEqual({ _service: 'closed', b: 'closed' });
    expect(status.cache.hits).toBe(1);
    expect(status.health.status).toBe('pass');
    expect(status.alerts).toEqual([]);
    const cleanup = await fetch(`${r.admin.url}/cache/cleanup`, { method: 'POST', headers: auth });
    expect(cleanup.status).toBe(200);
    expect(await cleanup.json()).toMatchObject({ objectsScanned: 1 });
    const verify = await fetch(`${r.admin.url}/cache/verify?fix=1`, { method: 'POST', headers: auth });
    expect(verify.status).toBe(200);
    expect(await verify.json()).toMatchObject({ objectsScanned: 1 });
  });

  it('fails readiness and refuses new connections once shutdown starts, and finishes the request in flight', async () => {
    const r = await start();
    const res = await fetch(`${r.gateway.url()}/b/a.bin`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const parts: Uint8Array[] = [(await reader.read()).value as Uint8Array];
    const url = r.gateway.url();
    const done = r.shutdown();
    const h = await ready(r);
    expect(h.status).toBe(503);
    expect(h.report.checks['process:shutdown']?.[0]?.status).toBe('fail');
    await expect(fetch(`${url}/b/c.bin`)).rejects.toThrow();
    for (;;) {
      const { done: end, value } = await reader.read();
      if (end) break;
      parts.push(value);
    }
    expect(sha(Buffer.concat(parts))).toBe(sha(harness.data.get('a.bin') as Buffer));
    expect(await done).toEqual({ exitCode: 0, drainTimedOut: false, failedHooks: [] });
  });
});
