import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** An origin in front of s3rver that answers 500 InternalError while `fail(true)`, and notes when each request arrived. */
export async function failingOrigin(upstream: string) {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true });
  const arrivals: number[] = [];
  let failing = false;
  const server = http.createServer((req, res) => {
    arrivals.push(Date.now());
    if (failing) {
      req.resume();
      res.writeHead(500, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0"?><Error><Code>InternalError</Code><Message>scripted</Message></Error>');
      return;
    }
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
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrivals,
    fail: (on: boolean) => {
      failing = on;
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
