import http from 'node:http';
import { keelError } from '../errors/index.js';
import { formatHostPort, parseHostPort, type HostPort } from './address.js';

/** What a matching request gets instead of (or on top of) the upstream's answer. */
export type HttpFaultAction =
  /** Answer at once with this status (the upstream is not called). 503 and 429 get `Retry-After`. */
  | { type: 'status'; status: number; retryAfterSeconds?: number; body?: string; contentType?: string }
  /** Hold the response headers for `ms`. */
  | { type: 'delay'; ms: number }
  /** Send the upstream's headers and the first `afterBytes` body bytes, then cut the connection. */
  | { type: 'cut'; afterBytes: number }
  /** Flip `bytes` body bytes (at random offsets), keeping the length. */
  | { type: 'corrupt'; bytes: number };

/** A rule: which requests, how often, and what happens to them. */
export interface HttpFaultRule {
  /** Name for `remove()` (default `rule-<n>`). */
  name?: string;
  /** Only these methods (default any). */
  method?: string | readonly string[];
  /** Only paths (without query) matching this RegExp, or starting with this string. */
  path?: RegExp | string;
  /** Share of matching requests affected (default 1). */
  probability?: number;
  action: HttpFaultAction;
}

/** Options of {@link HttpFaultProxy.start}. */
export interface HttpFaultProxyOptions {
  /** The HTTP server to forward to: `host:port` or `http://host:port`. */
  upstream: string;
  /** Where to listen (default `127.0.0.1:0`). */
  listen?: string;
  rules?: HttpFaultRule[];
  /** Source of randomness (default `Math.random`). */
  random?: () => number;
}

interface NamedRule extends HttpFaultRule {
  name: string;
}

function validateRule(rule: HttpFaultRule): void {
  const a = rule.action as HttpFaultAction | undefined;
  if (!a || typeof a !== 'object') {
    throw keelError(
      'INVALID_INPUT',
      `HTTP fault rule${rule.name ? ` ${rule.name}` : ''}: needs an action`,
      {},
      { stack: false },
    );
  }
  const bad: (m: string) => never = (m) => {
    throw keelError(
      'INVALID_INPUT',
      `HTTP fault rule${rule.name ? ` ${rule.name}` : ''}: ${m}`,
      {},
      { stack: false },
    );
  };
  if (rule.probability !== undefined && !(rule.probability >= 0 && rule.probability <= 1))
    bad('probability must be between 0 and 1');
  const methods: unknown = rule.method;
  if (
    methods !== undefined &&
    typeof methods !== 'string' &&
    !(Array.isArray(methods) && methods.every((m) => typeof m === 'string'))
  )
    bad('method must be a string or an array of strings');
  const path: unknown = rule.path;
  if (path !== undefined && typeof path !== 'string' && !(path instanceof RegExp))
    bad('path must be a RegExp or a path prefix string');
  switch (a.type) {
    case 'status':
      if (!Number.isInteger(a.status) || a.status < 100 || a.status > 599)
        bad(`status must be 100-599, got ${a.status}`);
      break;
    case 'delay':
      if (!(a.ms >= 0)) bad('delay ms must be >= 0');
      break;
    case 'cut':
      if (!Number.isInteger(a.afterBytes) || a.afterBytes < 0)
        bad('cut afterBytes must be a non-negative integer');
      break;
    case 'corrupt':
      if (!Number.isInteger(a.bytes) || a.bytes < 1) bad('corrupt bytes must be a positive integer');
      break;
    default:
      bad(
        `unknown action type ${JSON.stringify((a as { type?: unknown }).type)}; use status, delay, cut or corrupt`,
      );
  }
}

/**
 * An HTTP/1.1 proxy that injects faults into chosen requests: error statuses (500, 503 with
 * Retry-After, 429, 403 …), delayed headers, bodies cut after N bytes, corrupted bytes.
 */
export class HttpFaultProxy {
  private rules: NamedRule[] = [];
  private counter = 0;
  private readonly sockets = new Set<import('node:net').Socket>();
  /** Requests seen and faults applied, by rule name. */
  readonly stats = { requests: 0, faults: {} as Record<string, number> };

  private constructor(
    private readonly server: http.Server,
    private readonly upstream: HostPort,
    private readonly random: () => number,
  ) {}

  /**
   * Starts the proxy.
   * @throws KeelError `INVALID_INPUT` for a bad upstream or rule, `CONFLICT` when the port is in use.
   */
  static async start(options: HttpFaultProxyOptions): Promise<HttpFaultProxy> {
    const upstream = parseHostPort(options.upstream.replace(/^http:\/\//, '').replace(/\/$/, ''), 'upstream');
    const listen = parseHostPort(options.listen ?? '127.0.0.1:0', 'listen', true);
    const server = http.createServer();
    const proxy = new HttpFaultProxy(server, upstream, options.random ?? Math.random);
    for (const rule of options.rules ?? []) proxy.add(rule);
    server.on('request', (req, res) => {
      proxy.handle(req, res);
    });
    server.on('connection', (s) => {
      proxy.sockets.add(s);
      s.on('close', () => proxy.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(
          err.code === 'EADDRINUSE'
            ? keelError(
                'CONFLICT',
                `cannot listen on ${formatHostPort(listen.host, listen.port)}: the address is already in use`,
                {},
                { cause: err },
              )
            : err,
        );
      });
      server.listen(listen.port, listen.host, resolve);
    });
    return proxy;
  }

  /** The port it listens on. */
  get port(): number {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  get url(): string {
    return `http://${formatHostPort('127.0.0.1', this.port)}`;
  }

  /** Adds a rule; returns its name. */
  add(rule: HttpFaultRule): string {
    validateRule(rule);
    const name = rule.name ?? `rule-${++this.counter}`;
    this.rules.push({ ...rule, name });
    return name;
  }

  /** Removes a rule by name. */
  remove(name: string): boolean {
    const before = this.rules.length;
    this.rules = this.rules.filter((r) => r.name !== name);
    return this.rules.length !== before;
  }

  /** Removes every rule. */
  clear(): void {
    this.rules = [];
  }

  /** Stops the proxy, cutting open connections. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private pick(req: http.IncomingMessage): NamedRule[] {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    return this.rules.filter((r) => {
      if (r.method !== undefined) {
        const methods = typeof r.method === 'string' ? [r.method] : r.method;
        if (!methods.some((m) => m.toUpperCase() === req.method)) return false;
      }
      if (
        r.path !== undefined &&
        (typeof r.path === 'string' ? !path.startsWith(r.path) : !r.path.test(path))
      )
        return false;
      return r.probability === undefined || r.probability >= 1 || this.random() < r.probability;
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.stats.requests++;
    const rules = this.pick(req);
    for (const r of rules) this.stats.faults[r.name] = (this.stats.faults[r.name] ?? 0) + 1;
    const actions = rules.map((r) => r.action);
    const status = actions.find(
      (a): a is Extract<HttpFaultAction, { type: 'status' }> => a.type === 'status',
    );
    const delayMs = actions.reduce((ms, a) => (a.type === 'delay' ? ms + a.ms : ms), 0);
    const cut = actions.find((a): a is Extract<HttpFaultAction, { type: 'cut' }> => a.type === 'cut');
    const corrupt = actions.find(
      (a): a is Extract<HttpFaultAction, { type: 'corrupt' }> => a.type === 'corrupt',
    );

    if (status) {
      req.resume();
      setTimeout(() => {
        const headers: http.OutgoingHttpHeaders = { 'content-type': status.contentType ?? 'text/plain' };
        if (status.status === 503 || status.status === 429 || status.retryAfterSeconds !== undefined) {
          headers['retry-after'] = String(status.retryAfterSeconds ?? 1);
        }
        res.writeHead(status.status, headers).end(status.body ?? `injected fault: HTTP ${status.status}\n`);
      }, delayMs);
      return;
    }

    const upstreamReq = http.request(
      {
        host: this.upstream.host,
        port: this.upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upstreamRes) => {
        setTimeout(() => {
          res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
          let sent = 0;
          const length = Number(upstreamRes.headers['content-length'] ?? NaN);
          const flips = corrupt
            ? this.flipOffsets(corrupt.bytes, Number.isFinite(length) ? length : 65536)
            : undefined;
          upstreamRes.on('data', (chunk: Buffer) => {
            let data = chunk;
            if (flips) {
              data = Buffer.from(chunk);
              for (let i = 0; i < data.length; i++) if (flips.has(sent + i)) data[i] = (data[i] ?? 0) ^ 0xff;
            }
            if (cut && sent + data.length >= cut.afterBytes) {
              const keep = cut.afterBytes - sent;
              sent = cut.afterBytes;
              upstreamRes.destroy();
              // Cut only once the allowed bytes reached the kernel, so the client really gets them.
              res.write(data.subarray(0, keep), () => res.socket?.destroy());
              return;
            }
            sent += data.length;
            res.write(data);
          });
          upstreamRes.on('end', () => res.end());
          upstreamRes.on('error', () => res.socket?.destroy());
        }, delayMs);
      },
    );
    upstreamReq.on('error', () => {
      if (!res.headersSent)
        res.writeHead(502, { 'content-type': 'text/plain' }).end('upstream unreachable\n');
      else res.socket?.destroy();
    });
    req.pipe(upstreamReq);
  }

  private flipOffsets(count: number, length: number): Set<number> {
    const out = new Set<number>();
    const span = Math.max(1, length);
    while (out.size < Math.min(count, span)) out.add(Math.floor(this.random() * span));
    return out;
  }
}

/** Starts an {@link HttpFaultProxy}. */
export function httpProxy(options: HttpFaultProxyOptions): Promise<HttpFaultProxy> {
  return HttpFaultProxy.start(options);
}
