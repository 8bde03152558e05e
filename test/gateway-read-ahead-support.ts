import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An HTTP front of the test origin that counts what the gateway asks of it: GETs being answered
 * at once (the most seen, too), body bytes sent, and the ranges asked for. It can answer one
 * chosen range with 503 SlowDown, once. A gateway request that goes away cuts the origin's.
 */
export interface CountingFront {
  port: number;
  /** GETs whose answer is still being sent. */
  inFlight(): number;
  /** The most GETs answered at once since the last reset. */
  maxInFlight(): number;
  /** Body bytes of GET answers sent since the last reset. */
  bytesSent(): number;
  /** The Range headers of the GETs since the last reset, in arrival order. */
  ranges(): string[];
  /** The next GET whose Range starts at `start` gets 503 SlowDown instead of the origin's answer. */
  failOnce(start: number): void;
  reset(): void;
  close(): Promise<void>;
}

export async function startCountingFront(originUrl: string): Promise<CountingFront> {
  const origin = new URL(originUrl);
  const agent = new http.Agent({ keepAlive: true });
  let inFlight = 0;
  let max = 0;
  let bytes = 0;
  let ranges: string[] = [];
  const failing = new Set<number>();
  const server = http.createServer((req, res) => {
    const range = req.headers.range;
    const isGet = req.method === 'GET';
    if (isGet && range !== undefined) {
      ranges.push(range);
      const start = Number(/^bytes=(\d+)-/.exec(range)?.[1]);
      if (failing.delete(start)) {
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end(
          '<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>',
        );
        return;
      }
    }
    const up = http.request(
      {
        agent,
        host: origin.hostname,
        port: origin.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (isGet) {
          inFlight++;
          max = Math.max(max, inFlight);
          let counted = true;
          const done = (): void => {
            if (!counted) return;
            counted = false;
            inFlight--;
          };
          res.on('close', done);
          upRes.on('data', (d: Buffer) => {
            bytes += d.length;
          });
        }
        // An origin answer cut mid-way (a reset, a cut) is cut for the gateway too.
        upRes.on('error', () => res.destroy());
        upRes.on('aborted', () => res.destroy());
        upRes.on('close', () => {
          if (!upRes.complete) res.destroy();
        });
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    // The gateway gave up on this request: so does the origin.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    inFlight: () => inFlight,
    maxInFlight: () => max,
    bytesSent: () => bytes,
    ranges: () => [...ranges],
    failOnce: (start) => failing.add(start),
    reset: () => {
      max = inFlight;
      bytes = 0;
      ranges = [];
      failing.clear();
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
