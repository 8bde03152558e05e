import { timingSafeEqual, createHash } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, type Registry } from 'prom-client';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { wrap, classify } from 'keel';
import { parseAdminToken } from '@keel/ops';
import type { GatewayConfig } from '../config.js';
import type { WorkerSlot } from './primary.js';
import { FleetView, relayWithFleet } from './fleet-view.js';

/** The fleet's admin server. */
export interface FleetAdmin {
  url: string;
  close(): Promise<void>;
}

/** Probes answered for the fleet without a token, by what they ask. */
const PROBES: Record<string, 'live' | 'ready' | 'startup'> = {
  '/livez': 'live',
  '/live': 'live',
  '/health/live': 'live',
  '/readyz': 'ready',
  '/ready': 'ready',
  '/health/ready': 'ready',
  '/startupz': 'startup',
  '/health/startup': 'startup',
};

/** How long the primary waits for one worker's admin answer. */
const WORKER_ANSWER_MS = 5_000;

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * The admin port of `keel gateway --workers N`, served by the primary:
 * - `/metrics`: every worker's metrics aggregated by prom-client's {@link AggregatorRegistry}
 *   (counters and histograms summed; gauges of shared state, such as the cache's size, the
 *   largest worker's value), plus the primary's own (`keel_gateway_workers{state}`,
 *   `keel_gateway_worker_restarts_total`);
 * - `/status`: each worker's `/status` with its slot, pid, state and restarts, and `totals`;
 * - probes (`/livez`, `/readyz`, `/health/ready` …): the fleet's — ready while not draining and at
 *   least one worker is ready; started once every worker has been;
 * - `/health`, `/healthz`: each worker's health and the fleet's status (`pass` when every worker
 *   passes, `warn` while some are down, `fail` when none is ready);
 * - anything else (cache cleanup and verify, the dashboard …) goes to one ready worker's admin
 *   server, with the caller's token, which that worker checks; the dashboard's snapshots get a
 *   "Fleet" view first, one row per worker.
 * Everything but the probes needs `--admin-token` when one is set.
 */
export async function startFleetAdmin(
  config: GatewayConfig,
  fleet: {
    slots: readonly WorkerSlot[];
    registry: Registry;
    isDraining(): boolean;
    /** The worker's metrics as prom-client's JSON, or undefined when it did not answer in time. */
    metricsOf(slot: WorkerSlot): Promise<object[] | undefined>;
  },
): Promise<FleetAdmin> {
  // prom-client's aggregation (counters and histograms summed, gauges by each metric's
  // aggregator) over what the ready workers answer; a worker still starting is not asked.
  const clusterMetrics = async (): Promise<string> => {
    const answers = await Promise.all(ready().map((s) => fleet.metricsOf(s)));
    return AggregatorRegistry.aggregate(answers.filter((a) => a !== undefined)).metrics();
  };
  // `name:secret` names the token in the workers' action logs; the secret is what callers send.
  // A read token is let through too: the worker that answers refuses it anything but reading.
  const tokens = [
    ...(config.adminToken === undefined
      ? []
      : [parseAdminToken(config.adminToken, '--admin-token (KEEL_ADMIN_TOKEN)')]),
    ...(config.adminReadToken === undefined
      ? []
      : [parseAdminToken(config.adminReadToken, '--admin-read-token (KEEL_ADMIN_READ_TOKEN)', 'read')]),
  ].map((t) => digest(t.secret));
  const authorised = (req: IncomingMessage): boolean => {
    if (tokens.length === 0) return true;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const given = digest(m?.[1] ?? '');
    let ok = false;
    for (const t of tokens) if (timingSafeEqual(given, t)) ok = true;
    return ok && m !== null;
  };
  const fleetView = new FleetView(fleet.slots);
  const ready = (): WorkerSlot[] => fleet.slots.filter((s) => s.state === 'ready' && s.admin);
  const json = (res: ServerResponse, status: number, body: unknown): void => {
    if (!res.hasHeader('content-type')) res.setHeader('content-type', 'application/json');
    res.writeHead(status);
    res.end(JSON.stringify(body, null, 2));
  };
  const fromWorker = async (s: WorkerSlot, path: string, req?: IncomingMessage): Promise<Response> =>
    fetch(`${s.admin ?? ''}${path}`, {
      signal: AbortSignal.timeout(WORKER_ANSWER_MS),
      headers: req?.headers.authorization ? { authorization: req.headers.authorization } : {},
    });
  const perWorker = async (path: string, req: IncomingMessage): Promise<Record<string, unknown>[]> =>
    Promise.all(
      fleet.slots.map(async (s) => {
        const about = {
          slot: s.slot,
          pid: s.pid ?? null,
          state: s.state,
          restarts: s.restarts,
          lastExit: s.lastExit ?? null,
        };
        if (s.state !== 'ready' || !s.admin) return about;
        try {
          const r = await fromWorker(s, path, req);
          return { ...about, httpStatus: r.status, [path.slice(1)]: await r.json() };
        } catch (err) {
          return { ...about, error: classify(err).message };
        }
      }),
    );

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://admin').pathname.replace(/(.)\/$/, '$1');
    const probe = PROBES[path];
    if (probe) {
      const up = ready().length;
      const ok =
        probe === 'live' ||
        (probe === 'ready' && up > 0 && !fleet.isDraining()) ||
        (probe === 'startup' && fleet.slots.every((s) => s.state === 'ready' || s.restarts > 0));
      res.setHeader('content-type', 'application/health+json');
      json(res, ok ? 200 : 503, {
        status: ok ? 'pass' : 'fail',
        workers: { ready: up, total: fleet.slots.length },
        ...(fleet.isDraining() ? { draining: true } : {}),
      });
      return;
    }
    // The dashboard's page and its files hold no data: the worker serves them without a token.
    const pageFile =
      req.method === 'GET' &&
      (path === '/' || path === '/dashboard' || path.startsWith('/dashboard/assets/'));
    if (!pageFile && !authorised(req)) {
      json(res, 401, { error: 'admin token required (Authorization: Bearer <token>)' });
      return;
    }
    if (path === '/metrics' && req.method === 'GET') {
      // prom-client asks every live worker over IPC and merges their answers.
      const workers = await clusterMetrics();
      const own = await fleet.registry.metrics();
      res.writeHead(200, { 'content-type': fleet.registry.contentType });
      res.end(`${workers}\n${own}`);
      return;
    }
    if (path === '/status' && req.method === 'GET') {
      const workers = await perWorker('/status', req);
      json(res, 200, {
        workers,
        totals: {
          workers: fleet.slots.length,
          ready: ready().length,
          restarts: fleet.slots.reduce((n, s) => n + s.restarts, 0),
          requests: requestTotal(await clusterMetrics()),
        },
      });
      return;
    }
    if ((path === '/health' || path === '/healthz') && req.method === 'GET') {
      const workers = await perWorker(path, req);
      const up = ready().length;
      const allPass = workers.every((w) => w.httpStatus === 200);
      const status = up === 0 ? 'fail' : allPass && up === fleet.slots.length ? 'pass' : 'warn';
      json(res, status === 'fail' ? 503 : 200, { status, workers });
      return;
    }
    // Anything else: one ready worker answers it (the cache they share, the dashboard …).
    const target = ready()[0];
    if (!target) {
      json(res, 503, { error: 'no gateway worker is ready' });
      return;
    }
    const body = await new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => resolve(Buffer.concat(parts)));
      req.on('error', reject);
    });
    const headers: Record<string, string> = {};
    for (const h of ['authorization', 'content-type', 'accept', 'if-none-match'])
      if (typeof req.headers[h] === 'string') headers[h] = req.headers[h];
    // A client that goes away ends the worker's answer too (the dashboard's stream never ends).
    const gone = new AbortController();
    res.on('close', () => gone.abort());
    const r = await fetch(`${target.admin ?? ''}${req.url ?? '/'}`, {
      method: req.method ?? 'GET',
      headers,
      signal: gone.signal,
      ...(body.length > 0 ? { body } : {}),
    });
    const answer: Record<string, string> = {
      'content-type': r.headers.get('content-type') ?? 'application/octet-stream',
    };
    // fetch decodes a compressed answer, so content-encoding and content-length are not copied.
    for (const h of [
      'cache-control',
      'etag',
      'content-security-policy',
      'x-content-type-options',
      'referrer-policy',
      'retry-after',
      'www-authenticate',
    ]) {
      const v = r.headers.get(h);
      if (v !== null) answer[h] = v;
    }
    res.writeHead(r.status, answer);
    // The dashboard's snapshots get a row per worker.
    if (r.ok && r.body && req.method === 'GET' && path === '/dashboard/events') {
      res.socket?.setNoDelay(true);
      await relayWithFleet(r.body, fleetView, headers.authorization, (text) => res.write(text)).catch(
        () => undefined,
      );
      res.end();
      return;
    }
    if (r.ok && req.method === 'GET' && path === '/dashboard/snapshot') {
      res.end(fleetView.inject(await r.text(), headers.authorization));
      return;
    }
    // Streamed as it comes.
    if (!r.body) return void res.end();
    const stream = Readable.fromWeb(r.body as WebReadableStream<Uint8Array>);
    res.on('close', () => stream.destroy());
    stream.pipe(res);
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) json(res, 500, { error: classify(err).message });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      const e = classify(err);
      reject(
        wrap(
          err,
          e.code,
          `--admin (KEEL_ADMIN_LISTEN) ${config.adminHost}:${config.adminPort}: ${e.message}`,
        ),
      );
    });
    server.listen(config.adminPort, config.adminHost, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Requests answered by the whole fleet: the sum of `keel_gateway_requests_total` over its series. */
function requestTotal(metrics: string): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    const m = /^keel_gateway_requests_total(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m) total += Number(m[1]);
  }
  return total;
}
