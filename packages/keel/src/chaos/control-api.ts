import http from 'node:http';
import { classify, isKeelError, keelError } from '../errors/index.js';
import { formatHostPort, parseHostPort } from './address.js';
import { ChaosProxy } from './tcp-proxy.js';

/** The Toxiproxy version this API mirrors. */
export const TOXIPROXY_API_VERSION = '2.12.0';

/** Largest request body the control API reads. */
const MAX_BODY_BYTES = 1024 * 1024;

interface ApiError {
  status: number;
  message: string;
}

function apiError(status: number, message: string): ApiError {
  return { status, message };
}

function toApiError(err: unknown): ApiError {
  if (isKeelError(err)) {
    const status =
      err.code === 'NOT_FOUND'
        ? 404
        : err.code === 'CONFLICT'
          ? 409
          : err.code === 'INVALID_INPUT'
            ? 400
            : 500;
    return { status, message: err.message };
  }
  if (typeof err === 'object' && err !== null && 'status' in err && 'message' in err) return err as ApiError;
  return { status: 500, message: classify(err).message };
}

/** Options of {@link ChaosControlServer.start}. */
export interface ChaosControlOptions {
  /** `host:port` of the control API (default `127.0.0.1:8474`, Toxiproxy's). */
  listen?: string;
}

/**
 * An HTTP control API compatible with Toxiproxy's (same paths, fields, status codes and JSON error
 * bodies), so Toxiproxy clients drive keel's proxies unchanged.
 */
export class ChaosControlServer {
  readonly proxies = new Map<string, ChaosProxy>();
  private server: http.Server | undefined;
  private address = '';

  /** Starts the API. @throws KeelError `CONFLICT` when the port is in use. */
  static async start(options: ChaosControlOptions = {}): Promise<ChaosControlServer> {
    const api = new ChaosControlServer();
    const listen = parseHostPort(options.listen ?? '127.0.0.1:8474', 'listen', true);
    const server = http.createServer((req, res) => {
      void api.handle(req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(
          err.code === 'EADDRINUSE'
            ? keelError(
                'CONFLICT',
                `cannot listen on ${formatHostPort(listen.host, listen.port)}: address in use`,
                {},
                { cause: err },
              )
            : err,
        );
      });
      server.listen(listen.port, listen.host, resolve);
    });
    const addr = server.address();
    api.address = formatHostPort(listen.host, addr && typeof addr === 'object' ? addr.port : listen.port);
    api.server = server;
    return api;
  }

  /** Base URL of the API, e.g. `http://127.0.0.1:8474`. */
  get url(): string {
    return `http://${this.address}`;
  }

  /** Stops the API and every proxy. */
  async close(): Promise<void> {
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    this.proxies.clear();
    const server = this.server;
    this.server = undefined;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  /** Creates a proxy from a Toxiproxy proxy definition. */
  async createProxy(body: unknown): Promise<ChaosProxy> {
    const def = proxyDefinition(body);
    if (this.proxies.has(def.name)) throw apiError(409, 'proxy already exists');
    const proxy = await ChaosProxy.start({
      name: def.name,
      listen: def.listen,
      upstream: def.upstream,
      enabled: def.enabled,
    });
    this.proxies.set(def.name, proxy);
    return proxy;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
      const method = req.method ?? 'GET';
      const body = method === 'POST' || method === 'PATCH' ? await readJson(req) : undefined;
      const [status, payload] = await this.route(method, parts, body);
      send(res, status, payload);
    } catch (err) {
      const e = toApiError(err);
      send(res, e.status, { error: e.message, status: e.status });
    }
  }

  private async route(method: string, parts: string[], body: unknown): Promise<[number, unknown]> {
    const [head, name, sub, toxicName, ...rest] = parts;
    if (rest.length > 0) throw apiError(404, 'not found');
    // Toxiproxy >= 2.6 answers JSON here; clients pass the body through as text.
    if (head === 'version' && parts.length === 1 && method === 'GET')
      return [200, { version: TOXIPROXY_API_VERSION }];
    if (head === 'reset' && parts.length === 1 && method === 'POST') {
      for (const p of this.proxies.values()) {
        p.removeAll();
        await p.enable();
      }
      return [204, undefined];
    }
    if (head === 'populate' && parts.length === 1 && method === 'POST')
      return [201, { proxies: await this.populate(body) }];
    if (head !== 'proxies') throw apiError(404, 'not found');
    if (name === undefined) {
      if (method === 'GET')
        return [200, Object.fromEntries([...this.proxies].map(([n, p]) => [n, p.toJSON()]))];
      if (method === 'POST') return [201, (await this.createProxy(body)).toJSON()];
      throw apiError(405, 'method not allowed');
    }
    const proxy = this.proxies.get(name);
    if (!proxy) throw apiError(404, 'proxy not found');
    if (sub === undefined) {
      if (method === 'GET') return [200, proxy.toJSON()];
      if (method === 'POST' || method === 'PATCH')
        return [200, (await this.updateProxy(proxy, body)).toJSON()];
      if (method === 'DELETE') {
        await proxy.close();
        this.proxies.delete(name);
        return [204, undefined];
      }
      throw apiError(405, 'method not allowed');
    }
    if (sub !== 'toxics') throw apiError(404, 'not found');
    if (toxicName === undefined) {
      if (method === 'GET') return [200, proxy.toxicList()];
      if (method === 'POST') {
        return [200, proxy.add(body as Parameters<ChaosProxy['add']>[0])];
      }
      throw apiError(405, 'method not allowed');
    }
    const toxic = proxy.toxic(toxicName);
    if (!toxic) throw apiError(404, 'toxic not found');
    if (method === 'GET') return [200, toxic];
    if (method === 'POST' || method === 'PATCH') return [200, proxy.update(toxicName, body)];
    if (method === 'DELETE') {
      proxy.remove(toxicName);
      return [204, undefined];
    }
    throw apiError(405, 'method not allowed');
  }

  private async updateProxy(proxy: ChaosProxy, body: unknown): Promise<ChaosProxy> {
    if (typeof body !== 'object' || body === null)
      throw apiError(400, 'a proxy update must be a JSON object');
    const b = body as { enabled?: unknown; upstream?: unknown; listen?: unknown };
    if (b.enabled !== undefined && typeof b.enabled !== 'boolean')
      throw apiError(400, 'enabled must be a boolean');
    if (b.upstream !== undefined && typeof b.upstream !== 'string')
      throw apiError(400, 'upstream must be a string');
    if (b.listen !== undefined && typeof b.listen !== 'string')
      throw apiError(400, 'listen must be a string');
    if (typeof b.upstream === 'string') await proxy.setUpstream(b.upstream);
    if (typeof b.listen === 'string' && b.listen !== proxy.listen) await proxy.setListen(b.listen);
    if (b.enabled === true) await proxy.enable();
    if (b.enabled === false) await proxy.disable();
    return proxy;
  }

  private async populate(body: unknown): Promise<unknown[]> {
    if (!Array.isArray(body)) throw apiError(400, 'populate expects a JSON array of proxies');
    const defs = body.map(proxyDefinition);
    const out: unknown[] = [];
    for (const def of defs) {
      const existing = this.proxies.get(def.name);
      if (existing) {
        // Toxiproxy re-creates a proxy whose listen or upstream changed and keeps one that did not.
        if (
          existing.upstream !== def.upstream ||
          (def.listen !== existing.listen && !def.listen.endsWith(':0'))
        ) {
          await existing.close();
          this.proxies.delete(def.name);
        } else {
          if (def.enabled) await existing.enable();
          else await existing.disable();
          out.push(existing.toJSON());
          continue;
        }
      }
      out.push((await this.createProxy(def)).toJSON());
    }
    return out;
  }
}

interface ProxyDefinition {
  name: string;
  listen: string;
  upstream: string;
  enabled: boolean;
}

function proxyDefinition(body: unknown): ProxyDefinition {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw apiError(400, 'a proxy must be a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.name !== 'string' || b.name === '' || /[/?#]/.test(b.name))
    throw apiError(400, 'missing required field: name');
  if (typeof b.upstream !== 'string' || b.upstream === '')
    throw apiError(400, 'missing required field: upstream');
  if (b.listen !== undefined && typeof b.listen !== 'string') throw apiError(400, 'listen must be a string');
  if (b.enabled !== undefined && typeof b.enabled !== 'boolean')
    throw apiError(400, 'enabled must be a boolean');
  parseHostPort(b.upstream, 'upstream');
  const listen = parseHostPort(b.listen ?? '127.0.0.1:0', 'listen', true);
  return {
    name: b.name,
    upstream: b.upstream,
    listen: formatHostPort(listen.host, listen.port),
    enabled: b.enabled ?? true,
  };
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw apiError(413, 'request body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw apiError(400, 'bad request body: not valid JSON');
  }
}

function send(res: http.ServerResponse, status: number, payload: unknown): void {
  if (status === 204) {
    res.writeHead(204).end();
    return;
  }
  const body = JSON.stringify(payload);
  res
    .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    .end(body);
}
