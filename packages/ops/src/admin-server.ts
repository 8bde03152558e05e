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
  /**
   * When set, requests need `Authorization: Bearer <token>` (compared in constant time). This
   * token is named `admin` and may do everything; use `tokens` for several named ones.
   */
  token?: string | undefined;
  /**
   * Named tokens (with `token`, if both are given). A `read` token may call GET and HEAD routes
   * (status, metrics, the dashboard's stream); an `admin` token may also run actions (every other
   * method). The name says who asked in the action log, never the secret.
   */
  tokens?: readonly AdminToken[] | undefined;
  /**
   * Told about every action (a route called with a method other than GET and HEAD): who asked
   * (the token's name, or `anonymous` on a server without tokens), what, and how it was answered.
   * Also kept in {@link AdminServer.recentActions}. Default: nothing.
   */
  onAction?: ((action: AdminAction) => void) | undefined;
  /** Paths answered without the token (probes of an orchestrator). Default `['/livez', '/readyz', '/startupz']`. */
  openPaths?: readonly string[];
}

/** A named admin token: `admin` scope may do everything, `read` only GET and HEAD. */
export interface AdminToken {
  /** Who holds it, as the action log names them: 1–32 of `A-Z a-z 0-9 _ . -`. */
  name: string;
  /** At least 16 characters. */
  secret: string;
  /** Default `admin`. */
  scope?: AdminScope;
}

/** What a token may do: `read` (GET and HEAD) or `admin` (everything). */
export type AdminScope = 'read' | 'admin';

/** Who called an admin route: the name of their token (`anonymous` when the server has none). */
export interface AdminCaller {
  name: string;
  scope: AdminScope;
}

/** An action as logged: who asked, the method and path, the status answered, when and how long. */
export interface AdminAction {
  caller: string;
  method: string;
  path: string;
  /** The query string, as given (without the `?`), or '' when none. */
  query: string;
  status: number;
  /** Epoch ms when it was asked. */
  at: number;
  durationMs: number;
}

/** Options of {@link AdminServer.addRoute}. */
export interface AdminRouteOptions {
  /** Answered without a token (static files of the dashboard: never data). Default false. */
  open?: boolean;
}

const TOKEN_NAME = /^[A-Za-z0-9_.-]{1,32}$/;

/** Most actions kept by {@link AdminServer.recentActions}. */
export const RECENT_ACTIONS = 100;

/**
 * Parses `name:secret` (or a bare `secret`, named `admin`) as given on a command line.
 * @throws Error naming `setting` when the name or the secret is not valid.
 */
export function parseAdminToken(
  text: string,
  setting = 'admin.token',
  scope: AdminScope = 'admin',
): AdminToken {
  const m = /^([A-Za-z0-9_.-]{1,32}):(.*)$/s.exec(text);
  const token = m ? { name: m[1] ?? '', secret: m[2] ?? '', scope } : { name: 'admin', secret: text, scope };
  if (token.secret.length < 16)
    throw new Error(
      `${setting}: the secret must be at least 16 characters${m ? ` (token "${token.name}")` : ''}`,
    );
  return token;
}

/** A part of `/status`: called per request, its value is redacted and serialised. */
export type StatusProvider = () => unknown;

/** An extra endpoint added with {@link AdminServer.addRoute}; it writes the whole response. */
export type AdminRoute = (
  req: IncomingMessage,
  res: ServerResponse,
  caller: AdminCaller,
) => Promise<void> | void;

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
  private readonly openRoutes = new Set<string>();
  private readonly tokens: readonly { name: string; scope: AdminScope; digest: Buffer }[];
  private readonly openPaths: ReadonlySet<string>;
  private readonly closeHooks = new Set<() => void>();
  private readonly actions: AdminAction[] = [];

  constructor(private readonly options: AdminServerOptions) {
    if (
      options.port !== undefined &&
      !(Number.isInteger(options.port) && options.port >= 0 && options.port < 65536)
    )
      throw new Error(`admin.port: must be an integer in 0..65535, got ${String(options.port)}`);
    if (options.token !== undefined && options.token.length < 16)
      throw new Error('admin.token: must be at least 16 characters');
    const tokens = [
      ...(options.token === undefined
        ? []
        : [{ name: 'admin', secret: options.token, scope: 'admin' as const }]),
      ...(options.tokens ?? []),
    ];
    const names = new Set<string>();
    for (const t of tokens) {
      if (!TOKEN_NAME.test(t.name))
        throw new Error(`admin.tokens: name "${t.name}" must be 1-32 of A-Z a-z 0-9 _ . -`);
      if (t.secret.length < 16)
        throw new Error(`admin.tokens: the secret of "${t.name}" must be at least 16 characters`);
      if (names.has(t.name)) throw new Error(`admin.tokens: two tokens are named "${t.name}"`);
      names.add(t.name);
    }
    this.tokens = tokens.map((t) => ({ name: t.name, scope: t.scope ?? 'admin', digest: digest(t.secret) }));
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
  addRoute(method: string, path: string, route: AdminRoute, options: AdminRouteOptions = {}): () => void {
    const key = `${method.toUpperCase()} ${path}`;
    this.routes.set(key, route);
    if (options.open) this.openRoutes.add(key);
    else this.openRoutes.delete(key);
    return () => {
      this.routes.delete(key);
      this.openRoutes.delete(key);
    };
  }

  /** Runs `hook` when the server closes, before it waits for connections (ends long-lived streams). */
  onClose(hook: () => void): () => void {
    this.closeHooks.add(hook);
    return () => this.closeHooks.delete(hook);
  }

  /** The last {@link RECENT_ACTIONS} actions, oldest first (see `onAction`). */
  recentActions(): readonly AdminAction[] {
    return [...this.actions];
  }

  /** True when requests need a token (one is configured). */
  get requiresToken(): boolean {
    return this.tokens.length > 0;
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
    for (const hook of this.closeHooks) hook();
    return new Promise((resolve) => {
      this.server.close(() => {
        resolve();
      });
      this.server.closeIdleConnections();
    });
  }

  /** The caller's token, `anonymous` without tokens, or undefined when refused. */
  private caller(req: IncomingMessage): AdminCaller | undefined {
    if (this.tokens.length === 0) return { name: 'anonymous', scope: 'admin' };
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = digest(m?.[1] ?? '');
    let found: AdminCaller | undefined;
    // Every token is compared, so the time taken does not say which one nearly matched.
    for (const t of this.tokens) if (timingSafeEqual(given, t.digest) && m !== null) found ??= t;
    return found ? { name: found.name, scope: found.scope } : undefined;
  }

  private refuse(res: ServerResponse, head: boolean, caller: AdminCaller | undefined): void {
    if (!caller) {
      res.setHeader('www-authenticate', 'Bearer');
      this.send(res, 401, 'application/json', '{"error":"unauthorized: this needs the admin token"}', head);
      return;
    }
    const body = JSON.stringify({
      error: `forbidden: the token "${caller.name}" may only read; actions need a token with the admin scope`,
    });
    this.send(res, 403, 'application/json', body, head);
  }

  private record(action: AdminAction): void {
    this.actions.push(action);
    if (this.actions.length > RECENT_ACTIONS) this.actions.shift();
    this.options.onAction?.(action);
  }

  private send(res: ServerResponse, status: number, type: string, body: string, head = false): void {
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
    });
    res.end(head ? undefined : body);
  }

  /** A refused action is logged too: who tried (or `unknown` without a valid token), and the 401 or 403. */
  private recordRefused(
    req: IncomingMessage,
    path: string,
    url: string,
    q: number,
    caller: AdminCaller | undefined,
  ): void {
    this.record({
      caller: caller?.name ?? 'unknown',
      method: req.method ?? '',
      path,
      query: q >= 0 ? url.slice(q + 1) : '',
      status: caller ? 403 : 401,
      at: Date.now(),
      durationMs: 0,
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q >= 0 ? url.slice(0, q) : url;
    if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
    const head = req.method === 'HEAD';
    const key = `${req.method ?? 'GET'} ${path}`;
    const route = this.routes.get(key);
    if (route) {
      if (this.openRoutes.has(key) || this.openPaths.has(path)) {
        await route(req, res, { name: 'anonymous', scope: 'read' });
        return;
      }
      const caller = this.caller(req);
      const reading = req.method === 'GET' || head;
      if (!caller || (!reading && caller.scope !== 'admin')) {
        this.refuse(res, head, caller);
        if (!reading) this.recordRefused(req, path, url, q, caller);
        return;
      }
      if (reading) {
        await route(req, res, caller);
        return;
      }
      const at = Date.now();
      const done = (status: number): void => {
        this.record({
          caller: caller.name,
          method: req.method ?? '',
          path,
          query: q >= 0 ? url.slice(q + 1) : '',
          status,
          at,
          durationMs: Date.now() - at,
        });
      };
      try {
        await route(req, res, caller);
      } catch (err) {
        done(res.headersSent ? res.statusCode : classify(err).toProblem().status);
        throw err;
      }
      done(res.statusCode);
      return;
    }
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      this.send(res, 405, 'application/json', '{"error":"method not allowed"}');
      return;
    }
    if (!this.openPaths.has(path) && !this.caller(req)) {
      this.refuse(res, head, undefined);
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
