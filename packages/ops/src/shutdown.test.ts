import { EventEmitter } from 'node:events';
import { createServer, request, Agent } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import { GracefulShutdown } from './shutdown.js';
import { HealthRegistry } from './health.js';

function signals() {
  const source = new EventEmitter();
  return { source, send: (s: NodeJS.Signals) => source.emit(s) };
}

describe('GracefulShutdown', () => {
  it('fails readiness at once, waits the delay, runs hooks in reverse order and exits 0', async () => {
    const clock = new VirtualClock(0);
    const health = new HealthRegistry({ clock });
    health.markStarted();
    const exits: number[] = [];
    const order: string[] = [];
    const { source, send } = signals();
    const sd = new GracefulShutdown({
      clock,
      health,
      delayMs: 5000,
      exit: (c) => exits.push(c),
      signalSource: source,
    });
    sd.addHook('db', () => {
      order.push('db');
    });
    sd.addHook('queue', async () => {
      order.push('queue');
      await clock.sleep(100);
    });
    sd.addHook('http', () => {
      order.push('http');
    });
    sd.install();
    send('SIGTERM');
    expect((await health.report('readiness')).status).toBe('fail');
    await clock.advance(4999);
    expect(order).toEqual([]);
    await clock.advance(1);
    expect(order).toEqual(['http', 'queue']);
    await clock.advance(100);
    expect(order).toEqual(['http', 'queue', 'db']);
    expect(exits).toEqual([0]);
  });

  it('exits 1 when a hook fails or times out, and still runs the others', async () => {
    const clock = new VirtualClock(0);
    const exits: number[] = [];
    const ran: string[] = [];
    const sd = new GracefulShutdown({ clock, delayMs: 0, hookTimeoutMs: 1000, exit: (c) => exits.push(c) });
    sd.addHook('first', () => {
      ran.push('first');
    });
    sd.addHook('hangs', () => new Promise(() => undefined), { timeoutMs: 500 });
    sd.addHook('throws', () => {
      throw new Error('boom');
    });
    const done = sd.shutdown();
    await clock.advance(500);
    const result = await done;
    expect(result).toEqual({ exitCode: 1, drainTimedOut: false, failedHooks: ['throws', 'hangs'] });
    expect(ran).toEqual(['first']);
    expect(exits).toEqual([1]);
  });

  it('reports a hook that timed out at warn, naming the hook and its timeout', async () => {
    const clock = new VirtualClock(0);
    const lines: [string, string, Record<string, unknown>][] = [];
    const sd = new GracefulShutdown({
      clock,
      delayMs: 0,
      exit: () => undefined,
      log: (message, fields, level) => lines.push([level, message, fields]),
    });
    sd.addHook('hangs', () => new Promise(() => undefined), { timeoutMs: 500 });
    const done = sd.shutdown();
    await clock.advance(500);
    await done;
    expect(lines.filter(([, message]) => message === 'shutdown hook failed')).toEqual([
      ['warn', 'shutdown hook failed', { hook: 'hangs', error: 'timed out after 500 ms' }],
    ]);
  });

  it('exits at once on a second signal', async () => {
    const clock = new VirtualClock(0);
    const exits: number[] = [];
    const { source, send } = signals();
    const sd = new GracefulShutdown({
      clock,
      delayMs: 10_000,
      exit: (c) => exits.push(c),
      signalSource: source,
    });
    sd.install();
    send('SIGTERM');
    await clock.advance(1);
    send('SIGINT');
    expect(exits).toEqual([1]);
  });

  it('reports the steps of a normal shutdown at info and what went wrong at warn', async () => {
    const clock = new VirtualClock(0);
    const lines: string[] = [];
    const log = (message: string, _fields: Record<string, unknown>, level: 'info' | 'warn'): void => {
      lines.push(`${level} ${message}`);
    };
    await new GracefulShutdown({ clock, delayMs: 0, exit: () => undefined, log }).shutdown();
    expect(lines).toEqual(['info shutdown started', 'info shutdown finished']);

    lines.length = 0;
    const { source, send } = signals();
    const sd = new GracefulShutdown({
      clock,
      delayMs: 1000,
      exit: () => undefined,
      log,
      signalSource: source,
    });
    sd.addHook('throws', () => {
      throw new Error('boom');
    });
    sd.install();
    send('SIGTERM');
    send('SIGTERM');
    await clock.advance(1000);
    await sd.shutdown();
    expect(lines).toEqual([
      'info shutdown started',
      'warn second signal: exiting at once',
      'warn shutdown hook failed',
      'warn shutdown finished',
    ]);
  });

  it('closes idle keep-alive connections at once and lets an in-flight request finish', async () => {
    const clock = new VirtualClock(0);
    let finish!: () => void;
    let slowArrived!: () => void;
    const slowInFlight = new Promise<void>((r) => (slowArrived = r));
    const server = createServer((req, res) => {
      if (req.url === '/slow') {
        finish = () => res.end('slow done');
        slowArrived();
      } else res.end('fast');
    });
    const exits: number[] = [];
    const sd = new GracefulShutdown({
      clock,
      delayMs: 0,
      drainTimeoutMs: 60_000,
      exit: (c) => exits.push(c),
    });
    sd.addServer(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const agent = new Agent({ keepAlive: true });
    const get = (path: string) =>
      new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
        request({ port, host: '127.0.0.1', path, agent }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => {
            body += c.toString();
          });
          res.on('end', () => {
            resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection });
          });
        })
          .on('error', reject)
          .end();
      });
    expect((await get('/fast')).body).toBe('fast'); // leaves an idle keep-alive socket
    const slow = get('/slow');
    await slowInFlight;
    const done = sd.shutdown();
    await clock.advance(59_999); // up to the last moment of the drain timeout
    expect(exits).toEqual([]);
    finish();
    const res = await slow;
    expect(res.body).toBe('slow done');
    const result = await done;
    expect(result.exitCode).toBe(0);
    expect(server.listening).toBe(false);
    agent.destroy();
  });

  it('lets a large streamed body in flight reach an undici keep-alive client whole', async () => {
    const { Agent: UndiciAgent, request: undiciRequest } = await import('undici');
    const clock = new VirtualClock(0);
    const chunk = Buffer.alloc(64 * 1024, 7);
    const chunks = 256; // 16 MiB
    let started!: () => void;
    const streaming = new Promise<void>((r) => (started = r));
    const server = createServer((_req, res) => {
      res.setHeader('content-length', String(chunk.length * chunks));
      let sent = 0;
      const pump = (): void => {
        while (sent < chunks) {
          sent++;
          if (sent === 8) started();
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    });
    const sd = new GracefulShutdown({ clock, delayMs: 0, drainTimeoutMs: 60_000, exit: () => undefined });
    sd.addServer(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const dispatcher = new UndiciAgent({ keepAliveTimeout: 30_000 });
    const res = await undiciRequest(`http://127.0.0.1:${String(port)}/big`, { dispatcher });
    let received = 0;
    let paused = true;
    const body = (async () => {
      for await (const c of res.body) {
        received += (c as Buffer).length;
        // Read slowly at first so most of the body is still on its way when the drain starts.
        if (paused) await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await streaming;
    const done = sd.shutdown();
    paused = false;
    await body;
    expect(received).toBe(chunk.length * chunks);
    expect((await done).exitCode).toBe(0);
    await dispatcher.close();
  });

  it('closes connections after the drain timeout and exits 1', async () => {
    const clock = new VirtualClock(0);
    let arrived!: () => void;
    const inFlight = new Promise<void>((r) => (arrived = r));
    const server = createServer(() => {
      arrived(); // and never answers
    });
    const exits: number[] = [];
    const warnings: string[] = [];
    const sd = new GracefulShutdown({
      clock,
      delayMs: 0,
      drainTimeoutMs: 1000,
      exit: (c) => exits.push(c),
      log: (message, _fields, level) => {
        if (level === 'warn') warnings.push(message);
      },
    });
    sd.addServer(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const failed = new Promise<string>((resolve) => {
      request({ port, host: '127.0.0.1', path: '/' }, () => {
        resolve('answered');
      })
        .on('error', (e) => {
          resolve(e.message);
        })
        .end();
    });
    await inFlight; // shut down only once the server holds the request, or nothing is left to drain
    const done = sd.shutdown();
    await clock.advance(1000);
    expect((await done).drainTimedOut).toBe(true);
    expect(await failed).toMatch(/socket hang up|ECONNRESET/);
    expect(exits).toEqual([1]);
    expect(warnings).toEqual(['drain timed out: closing remaining connections', 'shutdown finished']);
  });

  it('rejects invalid options naming the setting', () => {
    expect(() => new GracefulShutdown({ delayMs: -1 })).toThrow(/shutdown\.delayMs/);
  });
});
