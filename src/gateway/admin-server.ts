import http from 'node:http';
import { statfs } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { classify } from '../errors/index.js';
import { REPAIR_COUNTERS } from '../cache/index.js';
import type { Gateway } from './gateway.js';

/** One health check's result. */
export interface CheckResult {
  status: 'pass' | 'warn' | 'fail';
  detail: string;
}

/** Options of {@link startAdminServer}. */
export interface AdminServerOptions {
  port: number;
  /** Bind address (default 127.0.0.1: admin endpoints are not for the public). */
  host?: string;
  /** Disk free share below which health warns (default 0.05). */
  minFreeDiskRatio?: number;
}

/** The running admin server. */
export interface AdminServer {
  server: http.Server;
  url(): string;
  close(): Promise<void>;
}

/** Health of the gateway: origin breakers, cache writability, disk space. */
export async function gatewayHealth(
  gateway: Gateway,
  minFreeDiskRatio = 0.05,
): Promise<Record<string, CheckResult>> {
  const checks: Record<string, CheckResult> = {};
  const open = Object.entries(gateway.guard.breakerStates()).filter(([, s]) => s !== 'closed');
  checks.origin =
    open.length === 0
      ? { status: 'pass', detail: 'no origin breaker open' }
      : { status: 'warn', detail: `breakers not closed: ${open.map(([b, s]) => `${b}=${s}`).join(', ')}` };
  const cache = gateway.cache;
  checks.cache = !cache
    ? { status: 'warn', detail: 'no cache: every read goes to the origin' }
    : cache.bypassed
      ? { status: 'warn', detail: `cache bypassed: ${cache.stats().bypassReason ?? 'unusable'}` }
      : { status: 'pass', detail: 'cache writable' };
  if (cache) {
    try {
      const s = await statfs(cache.dir);
      const ratio = s.bavail / s.blocks;
      checks.disk =
        ratio < minFreeDiskRatio
          ? { status: 'warn', detail: `${(ratio * 100).toFixed(1)} % free on the cache disk` }
          : { status: 'pass', detail: `${(ratio * 100).toFixed(1)} % free` };
    } catch (err) {
      checks.disk = { status: 'fail', detail: classify(err).message };
    }
  }
  return checks;
}

/** The `/status` document: cache stats with the six repair counters by their seed names, breakers, in-flight. */
export function gatewayStatus(gateway: Gateway): Record<string, unknown> {
  const stats = gateway.cache?.stats();
  return {
    inFlight: gateway.inFlight(),
    breakers: gateway.guard.breakerStates(),
    retryBudgetExhausted: gateway.guard.budgetExhausted,
    cache: stats ?? null,
    repairs: Object.fromEntries(REPAIR_COUNTERS.map((c) => [c, stats?.repairs[c] ?? 0])),
  };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, { 'content-type': 'application/json' }).end(text);
}

/**
 * The admin endpoints on their own port: `GET /health` (503 when a check fails), `GET /ready`
 * (503 while draining), `GET /metrics` (Prometheus), `GET /status`, `POST /cache/cleanup`,
 * `POST /cache/verify` (`?fix=1` repairs).
 */
export async function startAdminServer(
  gateway: Gateway,
  options: AdminServerOptions,
  isReady: () => boolean,
): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://admin');
      try {
        if (req.method === 'GET' && (url.pathname === '/health' || url.pathname === '/healthz')) {
          const checks = await gatewayHealth(gateway, options.minFreeDiskRatio);
          const status = Object.values(checks).some((c) => c.status === 'fail')
            ? 'fail'
            : Object.values(checks).some((c) => c.status === 'warn')
              ? 'warn'
              : 'pass';
          json(res, status === 'fail' ? 503 : 200, { status, checks });
        } else if (req.method === 'GET' && (url.pathname === '/ready' || url.pathname === '/readyz')) {
          const ready = isReady();
          json(res, ready ? 200 : 503, { ready });
        } else if (req.method === 'GET' && url.pathname === '/metrics') {
          const text = await gateway.metrics.registry.metrics();
          res.writeHead(200, { 'content-type': gateway.metrics.registry.contentType }).end(text);
        } else if (req.method === 'GET' && url.pathname === '/status') {
          json(res, 200, gatewayStatus(gateway));
        } else if (req.method === 'POST' && url.pathname === '/cache/cleanup') {
          if (!gateway.cache) json(res, 409, { error: 'no cache configured' });
          else json(res, 200, await gateway.cache.cleanup());
        } else if (req.method === 'POST' && url.pathname === '/cache/verify') {
          if (!gateway.cache) json(res, 409, { error: 'no cache configured' });
          else
            json(
              res,
              200,
              await gateway.cache.verify({
                fix: url.searchParams.get('fix') === '1' || url.searchParams.get('fix') === 'true',
              }),
            );
        } else json(res, 404, { error: `no admin endpoint ${req.method ?? ''} ${url.pathname}` });
      } catch (err) {
        json(res, 500, { error: classify(err).message });
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve());
  });
  return {
    server,
    url: () => {
      const a = server.address() as AddressInfo;
      return `http://${a.address}:${a.port}`;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
