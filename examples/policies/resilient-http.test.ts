import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import { resilientHttp } from './resilient-http.js';

let server: Server;
let base = '';
const hits: Record<string, number> = {};

beforeAll(async () => {
  server = createServer((req, res) => {
    const path = req.url ?? '/';
    hits[path] = (hits[path] ?? 0) + 1;
    if (path === '/flaky' && hits[path] <= 2) {
      res.writeHead(503, { 'retry-after': '1' }).end('busy');
    } else if (path === '/hang') {
      // never answers; the client's timeout aborts the request
    } else if (path === '/missing') {
      res.writeHead(404).end('no such thing');
    } else if (path === '/down') {
      res.writeHead(502).end('bad gateway');
    } else {
      res.writeHead(200).end(`hello from ${path}`);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** Advances virtual time in steps while real sockets do their work, until `p` settles. */
async function drive<T>(clock: VirtualClock, p: Promise<T>, stepMs = 100): Promise<T> {
  let done = false;
  const watched = p.finally(() => (done = true));
  watched.catch(() => undefined);
  for (let i = 0; i < 1000 && !done; i++) await clock.advance(stepMs);
  return watched;
}

describe('resilient HTTP example (real server, virtual time)', () => {
  it('retries 503s, honouring Retry-After, and returns the body', async () => {
    const clock = new VirtualClock();
    const get = resilientHttp(clock);
    const started = clock.now();
    await expect(drive(clock, get(`${base}/flaky`))).resolves.toBe('hello from /flaky');
    expect(hits['/flaky']).toBe(3);
    expect(clock.now() - started).toBeGreaterThanOrEqual(2000); // two Retry-After: 1 waits
  });

  it('does not retry a 404', async () => {
    const get = resilientHttp(new VirtualClock());
    await expect(get(`${base}/missing`)).rejects.toMatchObject({ status: 404 });
    expect(hits['/missing']).toBe(1);
  });

  it('aborts hung attempts after 2 s each and gives up after 3', async () => {
    const clock = new VirtualClock();
    const get = resilientHttp(clock);
    const err = await drive(clock, get(`${base}/hang`)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'RETRIES_EXHAUSTED', cause: { code: 'TIMEOUT' } });
    expect(hits['/hang']).toBe(3);
  });

  it('opens the host breaker after repeated failures and stops calling the host', async () => {
    const clock = new VirtualClock();
    const get = resilientHttp(clock);
    const errors: unknown[] = [];
    for (let i = 0; i < 4; i++) errors.push(await drive(clock, get(`${base}/down`)).catch((e: unknown) => e));
    expect(errors.at(-1)).toMatchObject({ code: 'CIRCUIT_OPEN' });
    expect(hits['/down']).toBe(5); // consecutive(5): the sixth attempt was rejected locally
    // another path on the same host is refused too, without a request
    const before = hits['/ok'] ?? 0;
    await expect(get(`${base}/ok`)).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    expect(hits['/ok'] ?? 0).toBe(before);
  });
});
