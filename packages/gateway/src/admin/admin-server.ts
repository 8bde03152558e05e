import type { IncomingMessage, ServerResponse } from 'node:http';
import { classify } from 'keel';
import { REPAIR_COUNTERS } from 'keel/cache';
import {
  actionsView,
  AdminServer,
  Dashboard,
  HEALTH_CONTENT_TYPE,
  httpStatusOfHealth,
  parseAdminToken,
  type AdminToken,
  type AlertManager,
  type DashboardView,
  type DiskMonitor,
  type HealthRegistry,
  type Probe,
} from '@keel/ops';
import type { Gateway } from '../gateway.js';
import { breakerLabel } from './metrics.js';
import type { GatewayRecovery } from './recovery.js';
import { gatewayView, idleVerify, verifyWithProgress } from './dashboard-view.js';

/** Options of {@link startAdminServer}. */
export interface GatewayAdminOptions {
  /** Port (0: any free port). */
  port: number;
  /** Bind address (default 127.0.0.1: admin endpoints are not for the public). */
  host?: string;
  /**
   * When set, every endpoint but the probes needs `Authorization: Bearer <secret>`: `name:secret`
   * (the name, 1–32 of `A-Z a-z 0-9 _ . -`, says who asked in the action log) or a bare secret
   * (named `admin`); the secret has at least 16 characters.
   */
  token?: string | undefined;
  /** Named tokens (see @keel/ops' AdminServer): the name says who ran an action in the log. */
  tokens?: readonly AdminToken[] | undefined;
  /** Where actions are logged with who asked (default: nowhere). */
  log?: ((level: 'info' | 'warn', msg: string, fields: Record<string, unknown>) => void) | undefined;
  /** The disk monitor's levels, drawn on the dashboard as watermarks. */
  diskWarningRatio?: number;
  diskCriticalRatio?: number;
  /** More dashboard views (a queue, operation groups) beside the gateway's. */
  views?: readonly DashboardView[];
  /** The health checks (see {@link registerGatewayHealth}); graceful shutdown fails its readiness. */
  health: HealthRegistry;
  /** Disk readings for `/status`. */
  disk?: DiskMonitor | undefined;
  /** Firing alerts for `/status`. */
  alerts?: AlertManager | undefined;
  /** Recovery states for `/status` (by check name). */
  recovery?: GatewayRecovery | undefined;
}

/** Probe paths answered without the admin token (what an orchestrator calls). */
const PROBE_ROUTES: Record<string, Probe | 'all'> = {
  '/health/live': 'liveness',
  '/health/ready': 'readiness',
  '/health/startup': 'startup',
  '/live': 'liveness',
  '/ready': 'readiness',
  '/health': 'all',
};

const OPEN_PATHS = [
  '/livez',
  '/readyz',
  '/startupz',
  ...Object.keys(PROBE_ROUTES).filter((p) => p !== '/health'),
];

/**
 * Registers the gateway's health checks, all readiness checks that warn rather than fail
 * readiness (a gateway whose origin is down still serves stale copies, and one whose cache is
 * unusable still serves from the origin):
 * - `origin:reachable`: fails while an origin breaker is open, warns while one is half-open;
 * - `cache:writable`: fails while the cache is bypassed (unusable directory, full disk, or I/O
 *   errors past the cache's threshold), warns while it has had I/O errors within its window;
 * - `disk:utilization` (with a `disk` monitor): warns at the warning level, fails at critical.
 */
export function registerGatewayHealth(gateway: Gateway, health: HealthRegistry, disk?: DiskMonitor): void {
  health.register({
    name: 'origin:reachable',
    componentType: 'component',
    critical: false,
    run: () => {
      const states = Object.entries(gateway.guard.breakerStates());
      const open = states.filter(([, s]) => s === 'open' || s === 'isolated').map(([b]) => b || '_service');
      const half = states.filter(([, s]) => s === 'halfOpen').map(([b]) => b || '_service');
      if (open.length > 0)
        return {
          status: 'fail',
          observedValue: open.length,
          observedUnit: 'open breakers',
          output: `origin breaker open for ${open.join(', ')}: cached copies are served stale, misses get 503 with Retry-After`,
        };
      return {
        status: half.length > 0 ? 'warn' : 'pass',
        observedValue: 0,
        observedUnit: 'open breakers',
        output: `origin breaker probing for ${half.join(', ')}`,
      };
    },
  });
  health.register({
    name: 'cache:writable',
    componentType: 'datastore',
    critical: false,
    run: () => {
      const cache = gateway.cache;
      if (!cache) return { status: 'warn', output: 'no cache configured: every read goes to the origin' };
      const stats = cache.stats();
      if (stats.bypass)
        return {
          status: 'fail',
          observedValue: 'bypass',
          output: `cache bypassed, nothing new is cached: ${stats.bypassReason ?? 'unusable'}`,
        };
      if (stats.recentIoErrors > 0)
        return {
          status: 'warn',
          observedValue: stats.recentIoErrors,
          observedUnit: `I/O errors in the last ${cache.ioErrorWindowMs / 1000} s`,
          output:
            `${stats.recentIoErrors} cache I/O error(s) in the last ${cache.ioErrorWindowMs / 1000} s ` +
            `(bypass at ${cache.ioErrorBypassThreshold}): each read or write that failed was served from the origin`,
        };
      return { status: 'pass', observedValue: 'caching' };
    },
  });
  disk?.healthCheck(health);
}

/** The gateway part of `/status`: requests in flight, breakers by bucket, retry budget. */
export function gatewayStatus(gateway: Gateway): Record<string, unknown> {
  return {
    inFlight: gateway.inFlight(),
    // By bucket; `_service` guards service-level calls and buckets the origin has not yet shown to exist.
    breakers: Object.fromEntries(
      Object.entries(gateway.guard.breakerStates()).map(([bucket, state]) => [breakerLabel(bucket), state]),
    ),
    retryBudgetExhausted: gateway.guard.budgetExhausted,
  };
}

/** The six repair counters by their seed names (zeros without a cache). */
export function repairCounts(gateway: Gateway): Record<string, number> {
  const stats = gateway.cache?.stats();
  return Object.fromEntries(REPAIR_COUNTERS.map((c) => [c, stats?.repairs[c] ?? 0]));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res
    .writeHead(status, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
    })
    .end(text);
}

/** Drains a request body we do not read, so the connection can be reused. */
function ignoreBody(req: IncomingMessage): void {
  req.resume();
}

/**
 * Starts @keel/ops' {@link AdminServer} with the gateway's endpoints: `GET /health/live`,
 * `/health/ready` (also `/live`, `/ready`, `/livez`, `/readyz`), `/health` and `/healthz`
 * (`application/health+json`, 503 when failing); `GET /metrics` (Prometheus text, or OpenMetrics
 * when the `Accept` header asks for it); `GET /status` (JSON: health, gateway, cache stats, the six
 * repair counters by name, disk, firing alerts, recovery states by check); `POST /cache/cleanup`;
 * `POST /cache/verify` (`?fix=1` repairs; one at a time, its progress on the dashboard);
 * `POST /breakers/reset?bucket=`; the dashboard at `/` and `/dashboard` (its stream at
 * `/dashboard/events`). With a token, everything but the probes and the page's static files needs
 * it; every action is logged with the name of the token that asked.
 * @throws Error when the port or the token is invalid, or the port is taken.
 */
export async function startAdminServer(gateway: Gateway, options: GatewayAdminOptions): Promise<AdminServer> {
  const { health } = options;
  const admin = new AdminServer({
    health,
    metrics: gateway.metrics.ops,
    port: options.port,
    host: options.host ?? '127.0.0.1',
    // `name:secret` names the token in the action log; a bare secret is named `admin`.
    tokens: [
      ...(options.token !== undefined
        ? [parseAdminToken(options.token, '--admin-token (KEEL_ADMIN_TOKEN)')]
        : []),
      ...(options.tokens ?? []),
    ],
    openPaths: OPEN_PATHS,
    onAction: (a) => {
      const fields = {
        caller: a.caller,
        method: a.method,
        path: a.path,
        query: a.query,
        status: a.status,
        durationMs: a.durationMs,
      };
      options.log?.(
        a.status < 400 ? 'info' : 'warn',
        `admin action ${a.method} ${a.path} by ${a.caller}: ${a.status}`,
        fields,
      );
    },
  });
  for (const [path, probe] of Object.entries(PROBE_ROUTES))
    admin.addRoute('GET', path, async (_req, res) => {
      const report = await health.report(probe);
      const body = JSON.stringify(report);
      res
        .writeHead(httpStatusOfHealth(report.status), {
          'content-type': HEALTH_CONTENT_TYPE,
          'cache-control': 'no-store',
          'content-length': Buffer.byteLength(body),
        })
        .end(body);
    });
  admin.addStatus('gateway', () => gatewayStatus(gateway));
  admin.addStatus('cache', () => gateway.cache?.stats() ?? null);
  admin.addStatus('repairs', () => repairCounts(gateway));
  if (options.disk) {
    const disk = options.disk;
    admin.addStatus('disk', () => disk.snapshot());
  }
  if (options.alerts) {
    const alerts = options.alerts;
    admin.addStatus('alerts', () => alerts.firing());
  }
  if (options.recovery) {
    const recovery = options.recovery;
    admin.addStatus('recovery', () => recovery.states());
  }
  admin.addRoute('POST', '/cache/cleanup', async (req, res) => {
    ignoreBody(req);
    const cache = gateway.cache;
    if (!cache) return json(res, 409, { error: 'no cache configured' });
    try {
      json(res, 200, await cache.cleanup());
    } catch (err) {
      json(res, 500, { error: `cache cleanup failed: ${classify(err).message}` });
    }
  });
  const verify = idleVerify();
  admin.addRoute('POST', '/cache/verify', async (req, res, caller) => {
    ignoreBody(req);
    const cache = gateway.cache;
    if (!cache) return json(res, 409, { error: 'no cache configured' });
    if (verify.running)
      return json(res, 409, {
        error: `a verify is running already (asked by ${verify.by ?? '?'}, ${verify.done} of ${verify.total} objects done)`,
      });
    const fix = new URL(req.url ?? '/', 'http://admin').searchParams.get('fix');
    try {
      json(res, 200, await verifyWithProgress(gateway, verify, fix === '1' || fix === 'true', caller.name));
    } catch (err) {
      json(res, 500, { error: `cache verify failed: ${classify(err).message}` });
    }
  });
  const dashboard = new Dashboard(admin, { title: 'keel gateway' });
  dashboard.addView(
    gatewayView(gateway, {
      disk: options.disk,
      alerts: options.alerts,
      verify,
      ...(options.diskWarningRatio !== undefined ? { diskWarningRatio: options.diskWarningRatio } : {}),
      ...(options.diskCriticalRatio !== undefined ? { diskCriticalRatio: options.diskCriticalRatio } : {}),
    }),
  );
  for (const view of options.views ?? []) dashboard.addView(view);
  dashboard.addView(actionsView(admin));
  await admin.listen();
  return admin;
}
