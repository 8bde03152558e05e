import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { classify, PROBLEM_CONTENT_TYPE, redact } from 'keel';
import { HEALTH_CONTENT_TYPE, httpStatusOfHealth, type HealthRegistry, type Probe } from './health.js';
import { formatFromAccept, type Metrics } from './metrics.js';

/** Options of {@link AdminServer}. */
export interface AdminServerOptions {
  health: HealthRegistry;
  metrics?: Metrics;
  /** Default `127.0.0.1` (loopback only). */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** When set, requests need `Authorization: Bearer <token>` (compared in constant time). */
  token?: string | undefined;
  /** Paths answered without the token (probes of an orchestrator). Default `['/livez', '/readyz', '/startupz']`. */
  openPaths?: readonly string[];
}

/** A part of `/status`: called per request, its value is redacted and serialised. */
export type StatusProvider = () => unknown;

/** An extra endpoint added with {@link AdminServer.addRoute}; it writes the whole response. */
export type AdminRoute = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void;

const PROBES: Record<string, Probe | 'all'> = {
  '/livez': 'liveness',
  '/readyz': 'readiness',
  '/startupz': 'startup',
  '/healthz': 'all',
};

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * The admin HTTP endpoints: `/livez`, `/readyz`, `/startupz`, `/healthz` (health+json),
 * `/metrics` (Prometheus text or OpenMetrics by `Accept`) and `/status` (JSON of every registered
 * provider). Routes match the path only, so a query string cannot reach another route or skip
 * the token check; every response is built fresh. A route that throws is answered with
 * `application/problem+json` (the error's status, code, severity and recovery hints).
 */
export class AdminServer {
  /** The node:http server (add it to a {@link GracefulShutdown} if it should be drained). */
  readonly server: Server;
  private readonly providers = new Map<string, StatusProvider>();
  private readonly routes = new Map<string, AdminRoute>();
  private readonly tokenDigest: Buffer | undefined;
  private readonly openPaths: ReadonlySet<string>;

  constructor(private readonly options: AdminServerOptions) {
    if (
      options.port !== undefined &&
      !(Number.isInteger(options.port) && options.port >= 0 && options.port < 65536)
    )
      throw new Error(`admin.port: must be an integer in 0..65535, got ${String(options.port)}`);
    if (options.token !== undefined && options.token.length < 16)
      throw new Error('admin.token: must be at least 16 characters');
    this.tokenDigest = options.token === undefined ? undefined : digest(options.token);
    this.openPaths = new Set(options.openPaths ?? ['/livez', '/readyz', '/startupz']);
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        // A route that failed answers RFC 9457 problem details: status, code, severity and the
        // recovery hints of the error, secrets redacted.
        if (!res.headersSent) {
          const problem = classify(err).toProblem();
          this.send(res, problem.status, PROBLEM_CONTENT_TYPE, JSON.stringify(problem));
        } else res.destroy();
      });
    });
  }

  /** Adds a named section to `/status` (e.g. `breakers`, `cache`, `queue`). Returns a remover. */
  addStatus(name: string, provider: StatusProvider): () => void {
    this.providers.set(name, provider);
    return () => this.providers.delete(name);
  }

  /**
   * Adds an endpoint (e.g. `POST /cache/cleanup`) behind the same token check as the others
   * (unless its path is in `openPaths`). Returns a remover.
   */
  addRoute(method: string, path: string, route: AdminRoute): () => void {
    const key = `${method.toUpperCase()} ${path}`;
    this.routes.set(key, route);
    return () => this.routes.delete(key);
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** `http://host:port` once listening. */
  get url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${String(a.port)}`;
  }

  /** Stops listening and closes idle connections. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => {
        resolve();
      });
      this.server.closeIdleConnections();
    });
  }

  private authorised(req: IncomingMessage, path: string): boolean {
    if (!this.tokenDigest || this.openPaths.has(path)) return true;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    return timingSafeEqual(digest(m?.[1] ?? ''), this.tokenDigest) && m !== null;
  }

  private send(res: ServerResponse, status: number, type: string, body: string, head = false): void {
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
    });
    res.end(head ? undefined : body);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q >= 0 ? url.slice(0, q) : url;
    if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
    const head = req.method === 'HEAD';
    const route = this.routes.get(`${req.method ?? 'GET'} ${path}`);
    if (route) {
      if (!this.authorised(req, path)) {
        res.setHeader('www-authenticate', 'Bearer');
        this.send(res, 401, 'application/json', '{"error":"unauthorized"}', head);
        return;
      }
      await route(req, res);
      return;
    }
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      this.send(res, 405, 'application/json', '{"error":"method not allowed"}');
      return;
    }
    if (!this.authorised(req, path)) {
      res.setHeader('www-authenticate', 'Bearer');
      this.send(res, 401, 'application/json', '{"error":"unauthorized"}', head);
      return;
    }
    const probe = PROBES[path];
    if (probe) {
      const report = await this.options.health.report(probe);
      this.send(res, httpStatusOfHealth(report.status), HEALTH_CONTENT_TYPE, JSON.stringify(report), head);
      return;
    }
    if (path === '/metrics' && this.options.metrics) {
      const format = formatFromAccept(req.headers.accept);
      const body = await this.options.metrics.render(format);
      this.send(res, 200, this.options.metrics.contentType(format), body, head);
      return;
    }
    if (path === '/status') {
      const status: Record<string, unknown> = { health: await this.options.health.report('all') };
      for (const [name, provider] of this.providers) {
        try {
          status[name] = await provider();
        } catch (err) {
          status[name] = { error: err instanceof Error ? err.message : String(err) };
        }
      }
      this.send(res, 200, 'application/json', JSON.stringify(redact(status)), head);
      return;
    }
    this.send(res, 404, 'application/json', '{"error":"not found"}', head);
  }
}
