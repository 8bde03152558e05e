import type { IncomingMessage } from 'node:http';
import net, { type Socket } from 'node:net';

/*
 * The gateway as a forward proxy (`passthrough` auth), so real clients sign for the origin's own
 * host name: `HTTP_PROXY=http://gateway:8080` with `--endpoint-url http://<origin host>` sends
 * absolute-form requests (`GET http://<origin host>/bucket/key`), and `HTTPS_PROXY` sends CONNECT.
 * Only the configured origin's host (and its virtual-host-style subdomains) is served: the
 * gateway is never an open proxy.
 */

/** Where a request goes: its origin-form target and the Host it signed. */
export interface ProxyEntry {
  /** Path and query (origin-form). */
  target: string;
  /** The Host header to forward (the one the client signed). */
  host: string;
  /** The request line was absolute-form (`GET http://host/path`): a forward-proxy request. */
  absolute: boolean;
}

/** A request the gateway refuses to forward: absolute-form to a host that is not the origin's. */
export interface ProxyRefusal {
  refused: string;
}

/** Host names longer than this are not repeated in logs. */
const MAX_LOGGED_HOST = 256;

/** A client-given host, cut for a log line. */
export function loggableHost(host: string): string {
  return host.length > MAX_LOGGED_HOST ? `${host.slice(0, MAX_LOGGED_HOST)}…` : host;
}

/**
 * True when `host` (`name[:port]`, as in a Host header or URL.host) is the origin's `originHost`
 * or a virtual-host-style subdomain of it (`bucket.<origin host>`), compared case-insensitively.
 */
export function isOriginHost(host: string, originHost: string): boolean {
  const h = host.toLowerCase();
  const o = originHost.toLowerCase();
  return h === o || h.endsWith(`.${o}`);
}

/**
 * The target and Host of a request: an origin-form request (`GET /bucket/key`) as it came; an
 * absolute-form one (`GET http://host/bucket/key`) only when its host is the origin's (or a
 * subdomain of it), with the Host header it sent (which, as HTTP/1.1 requires, names that host;
 * the URL's host when it sent none).
 */
export function proxyEntryOf(req: IncomingMessage, origin: URL): ProxyEntry | ProxyRefusal {
  const raw = req.url ?? '/';
  if (raw.startsWith('/')) return { target: raw, host: req.headers.host ?? origin.host, absolute: false };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { refused: 'the request target is neither a path nor an absolute URL' };
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !isOriginHost(url.host, origin.host))
    return {
      refused: `this gateway forwards only to its origin ${origin.host}, not to ${loggableHost(url.host)}`,
    };
  // The path and query exactly as sent (URL would normalise them, and the signature covers them).
  const afterAuthority = raw.indexOf('/', raw.indexOf('//') + 2);
  const target = afterAuthority === -1 ? '/' : raw.slice(afterAuthority);
  const host = req.headers.host ?? url.host;
  if (!isOriginHost(host, origin.host))
    return { refused: `the Host header ${loggableHost(host)} does not name the origin ${origin.host}` };
  return { target, host, absolute: true };
}

/** Options of {@link handleConnect}. */
export interface TunnelOptions {
  /** The configured origin. */
  origin: URL;
  /** Tunnels open at once, at most; more are refused with 503. */
  maxTunnels: number;
  /** A tunnel with no traffic either way this long is closed. */
  idleTimeoutMs: number;
  /** Called once per CONNECT: opened, refused (not the origin's host) or failed (the origin could not be reached; too many tunnels). */
  onTunnel?: (result: 'opened' | 'refused' | 'failed') => void;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** The origin's port: its URL's, or the scheme's default. */
function originPort(origin: URL): number {
  return Number(origin.port || (origin.protocol === 'https:' ? 443 : 80));
}

/**
 * Serves the CONNECT requests of a server (HTTPS through the gateway as a proxy): a tunnel to the
 * origin's host and port (or a virtual-host-style subdomain of it), bytes passed both ways as they
 * are, nothing cached (the gateway cannot read TLS). Any other host is answered 403 and logged.
 * Returns the handler for the server's `connect` event.
 */
export function connectHandler(
  options: TunnelOptions,
): (req: IncomingMessage, client: Socket, head: Buffer) => void {
  let open = 0;
  const port = originPort(options.origin);
  return (req, client, head) => {
    client.on('error', () => undefined);
    const answer = (status: string): void => {
      client.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    };
    const target = req.url ?? '';
    const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(target);
    const host = m?.[1] ?? '';
    if (!m || Number(m[2]) !== port || !isOriginHost(host, options.origin.hostname)) {
      options.log('warn', 'CONNECT refused: not the origin', {
        target: loggableHost(target),
        origin: `${options.origin.hostname}:${port}`,
      });
      options.onTunnel?.('refused');
      answer('403 Forbidden');
      return;
    }
    if (open >= options.maxTunnels) {
      options.log('warn', `CONNECT refused: ${options.maxTunnels} tunnels already open`);
      options.onTunnel?.('failed');
      answer('503 Service Unavailable');
      return;
    }
    open++;
    let counted = true;
    const release = (): void => {
      if (!counted) return;
      counted = false;
      open--;
    };
    const upstream = net.connect({ host: host.replace(/^\[|\]$/g, ''), port });
    upstream.setTimeout(options.idleTimeoutMs);
    client.setTimeout(options.idleTimeoutMs);
    const close = (): void => {
      release();
      upstream.destroy();
      client.destroy();
    };
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      options.onTunnel?.('opened');
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.once('error', (err) => {
      if (!connected && !client.destroyed) {
        options.log('warn', `CONNECT to the origin failed: ${err.message}`);
        options.onTunnel?.('failed');
        release();
        answer('502 Bad Gateway');
        return;
      }
      close();
    });
    upstream.once('timeout', close);
    client.once('timeout', close);
    upstream.once('close', close);
    client.once('close', close);
  };
}
