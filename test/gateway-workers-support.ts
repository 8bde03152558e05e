import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { TEST_CREDENTIALS } from './s3-origin.js';

/** A `keel gateway --workers N` process. */
export interface Fleet {
  proc: ChildProcess;
  url: string;
  admin: string;
  exited: Promise<number | null>;
  /** Everything it wrote on stderr so far (logs, alerts). */
  stderr(): string;
}

/** Starts `keel gateway --workers <workers>` in front of `upstream`; resolves once it announced its endpoints. */
export function startFleet(
  upstream: string,
  cacheDir: string,
  workers: number,
  extra: string[] = [],
): Promise<Fleet> {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'packages/gateway/src/cli/main.ts',
      'gateway',
      '--upstream',
      upstream,
      '--auth',
      'anonymous',
      '--listen',
      '0',
      '--admin',
      '0',
      '--cache-dir',
      cacheDir,
      '--slice-bytes',
      '1MiB',
      '--workers',
      String(workers),
      '--alerts',
      'log',
      ...extra,
    ],
    {
      env: {
        ...process.env,
        KEEL_ORIGIN_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
        KEEL_ORIGIN_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  let err = '';
  return new Promise((resolve, reject) => {
    proc.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /S3 endpoint (http:\/\/\S+) .*admin (http:\/\/\S+)/.exec(err);
      if (m) resolve({ proc, url: m[1] as string, admin: m[2] as string, exited, stderr: () => err });
    });
    proc.stdout.resume();
    void exited.then(() => reject(new Error(`gateway exited early: ${err}`)));
  });
}

/** Sum of a counter's series in Prometheus text. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`).exec(line);
    if (!m) continue;
    const have = m[1] ?? '';
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) total += Number(m[2]);
  }
  return total;
}

/**
 * An HTTP proxy in front of the origin that counts the body bytes of its answers to GETs. With
 * `delayNextGet(ms)`, the next GET is forwarded at once but its answer held back `ms`: what the
 * origin said then reaches the gateway late, as from a slow origin.
 */
export async function countingProxy(
  upstream: string,
): Promise<{ url: string; getBytes(): number; delayNextGet(ms: number): void; close(): Promise<void> }> {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true });
  let bytes = 0;
  let delayMs = 0;
  const server = http.createServer((req, res) => {
    const held = req.method === 'GET' ? delayMs : 0;
    if (held > 0) delayMs = 0;
    const up = http.request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upRes) => {
        if (held > 0) {
          const parts: Buffer[] = [];
          upRes.on('data', (d: Buffer) => parts.push(d));
          upRes.on('end', () => {
            setTimeout(() => {
              res.writeHead(upRes.statusCode ?? 502, upRes.headers);
              res.end(Buffer.concat(parts));
            }, held);
          });
          return;
        }
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        // A client that stops reading stops the transfer: what the origin sends is what is counted.
        res.on('close', () => {
          if (!res.writableFinished) upRes.destroy();
        });
        upRes.on('data', (d: Buffer) => {
          if (req.method === 'GET') bytes += d.length;
        });
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    getBytes: () => bytes,
    delayNextGet: (ms) => {
      delayMs = ms;
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
