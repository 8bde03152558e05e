import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VirtualClock, keelError, retry, constant, withCorrelation, type RetryPolicy } from 'keel';
import { AlertManager } from './manager.js';
import { jsonlFileAlertHandler } from './jsonl-file-handler.js';
import { webhookAlertHandler, alertmanagerHandler } from './webhook-handler.js';
import { sanitiseAlert } from './sanitise.js';
import type { Alert, AlertHandler } from './types.js';

function memory(name = 'mem'): AlertHandler & { batches: Alert[][] } {
  const batches: Alert[][] = [];
  return {
    name,
    batches,
    send: (a) => {
      batches.push([...a]);
    },
  };
}

/**
 * `retried(n)` resolves once `policy` has scheduled its n-th retry: the attempt before it has
 * failed over real sockets and its backoff timer is pending on the virtual clock, ready to advance.
 */
function retriesOf(policy: RetryPolicy): (n: number) => Promise<void> {
  let count = 0;
  const waiting: { n: number; resolve: () => void }[] = [];
  policy.on('retry', () => {
    count++;
    for (const w of waiting.filter((x) => x.n <= count)) {
      waiting.splice(waiting.indexOf(w), 1);
      w.resolve();
    }
  });
  return (n) => (n <= count ? Promise.resolve() : new Promise((resolve) => waiting.push({ n, resolve })));
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'keel-ops-alerts-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('AlertManager', () => {
  it("carries the id of the work that caused an alert: the one it was raised under, or its error's", () => {
    const h = memory();
    const m = new AlertManager({ clock: new VirtualClock(0), handlers: [h] });
    const under = withCorrelation('req-7', () =>
      m.raise({ name: 'A', severity: 'warning', summary: 's', details: { n: 1 } }),
    );
    expect(under?.details).toEqual({ n: 1, correlationId: 'req-7' });
    const failed = keelError('IO_ERROR', 'disk', undefined, { correlationId: 'job-3' });
    const fromError = withCorrelation('req-8', () => m.raise({ name: 'B', summary: 's', error: failed }));
    expect(fromError?.details.correlationId).toBe('job-3');
    expect((fromError?.details.error as { correlationId?: string }).correlationId).toBe('job-3');
    // Raised outside any request: no id is made up.
    expect(m.raise({ name: 'C', severity: 'info', summary: 's' })?.details).toEqual({});
  });

  it('deduplicates a firing alert inside the window and sends it again after', async () => {
    const clock = new VirtualClock(0);
    const h = memory();
    const m = new AlertManager({ clock, handlers: [h], dedupWindowMs: 60_000 });
    expect(m.raise({ name: 'X', severity: 'error', summary: 's', labels: { a: '1' } })).toBeDefined();
    expect(m.raise({ name: 'X', severity: 'error', summary: 's', labels: { a: '1' } })).toBeUndefined();
    m.raise({ name: 'X', severity: 'error', summary: 's', labels: { a: '2' } });
    await clock.advance(60_000);
    m.raise({ name: 'X', severity: 'error', summary: 's', labels: { a: '1' } });
    await m.flush();
    expect(h.batches.flat().map((a) => [a.labels.a, a.count])).toEqual([
      ['1', 1],
      ['2', 1],
      ['1', 3],
    ]);
  });

  it('groups alerts with equal group labels into one notification', async () => {
    const clock = new VirtualClock(0);
    const h = memory();
    const m = new AlertManager({ clock, handlers: [h], groupWaitMs: 30_000, groupBy: ['component'] });
    m.raise({ name: 'Err', severity: 'error', summary: '1', labels: { component: 'cache', n: '1' } });
    m.raise({ name: 'Err', severity: 'error', summary: '2', labels: { component: 'cache', n: '2' } });
    m.raise({ name: 'Err', severity: 'error', summary: '3', labels: { component: 'queue', n: '3' } });
    await m.flush().then(() => undefined);
    expect(h.batches.map((b) => b.map((a) => a.summary))).toEqual([['1', '2'], ['3']]);
  });

  it('sends a group when its wait is over', async () => {
    const clock = new VirtualClock(0);
    const h = memory();
    const m = new AlertManager({ clock, handlers: [h], groupWaitMs: 30_000 });
    m.raise({ name: 'A', severity: 'info', summary: '1', labels: { n: '1' } });
    m.raise({ name: 'A', severity: 'info', summary: '2', labels: { n: '2' } });
    await clock.advance(29_999);
    expect(h.batches).toEqual([]);
    await clock.advance(1);
    await m.flush();
    expect(h.batches.map((b) => b.length)).toEqual([2]);
  });

  it('routes by severity and labels', async () => {
    const pager = memory('pager');
    const chat = memory('chat');
    const m = new AlertManager({
      handlers: [pager, chat],
      routes: [
        { severities: ['critical'], handlers: ['pager'], continue: true },
        { labels: { team: 'storage' }, handlers: ['chat'] },
      ],
    });
    m.raise({ name: 'A', severity: 'critical', summary: 'c', labels: { team: 'storage' } });
    m.raise({ name: 'B', severity: 'warning', summary: 'w', labels: { team: 'storage' } });
    m.raise({ name: 'C', severity: 'warning', summary: 'x', labels: { team: 'web' } });
    await m.flush();
    expect(pager.batches.flat().map((a) => a.name)).toEqual(['A']);
    expect(chat.batches.flat().map((a) => a.name)).toEqual(['A', 'B']);
  });

  it('rate-limits notifications but keeps them in history', async () => {
    const clock = new VirtualClock(0);
    const h = memory();
    const m = new AlertManager({ clock, handlers: [h], maxPerMinute: 2 });
    for (let i = 0; i < 5; i++)
      m.raise({ name: 'N', severity: 'info', summary: String(i), labels: { i: String(i) } });
    await m.flush();
    expect(h.batches.length).toBe(2);
    expect(m.suppressed).toBe(3);
    expect(m.history().length).toBe(5);
    await clock.advance(60_000);
    m.raise({ name: 'N', severity: 'info', summary: 'later', labels: { i: 'x' } });
    await m.flush();
    expect(h.batches.length).toBe(3);
  });

  it('sends resolve notifications', async () => {
    const h = memory();
    const m = new AlertManager({ handlers: [h] });
    m.raise({ name: 'Disk', severity: 'warning', summary: 'full', labels: { path: '/x' } });
    expect(m.resolve('Disk', { path: '/x' })?.status).toBe('resolved');
    expect(m.resolve('Disk', { path: '/x' })).toBeUndefined();
    await m.flush();
    expect(h.batches.flat().map((a) => a.status)).toEqual(['firing', 'resolved']);
    expect(m.firing()).toEqual([]);
  });

  it('keeps a bounded history on disk that survives a restart', async () => {
    const dir = await tempDir();
    const historyFile = join(dir, 'state', 'alerts.json');
    const first = new AlertManager({ handlers: [], historyFile, historySize: 3 });
    await first.start();
    for (let i = 0; i < 5; i++)
      first.raise({ name: 'H', severity: 'info', summary: String(i), labels: { i: String(i) } });
    first.resolve('H', { i: '4' });
    await first.close();
    const second = new AlertManager({ handlers: [], historyFile, historySize: 3 });
    await second.start();
    expect(second.history().map((a) => [a.summary, a.status])).toEqual([
      ['3', 'firing'],
      ['4', 'firing'],
      ['4', 'resolved'],
    ]);
    expect(second.firing().map((a) => a.summary)).toEqual(['3']);
    // A reloaded firing alert is deduplicated, not re-sent as new.
    expect(second.resolve('H', { i: '3' })?.status).toBe('resolved');
    // Its history save must end before the directory is removed.
    await second.close();
  });

  it('fails at start with the setting name when the history file cannot be written', async () => {
    const dir = await tempDir();
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'file'), 'x');
    const m = new AlertManager({ handlers: [], historyFile: join(dir, 'file', 'alerts.json') });
    await expect(m.start()).rejects.toThrow(/alerts\.historyFile/);
  });

  it('rejects invalid config naming the setting', () => {
    expect(() => new AlertManager({ handlers: [], routes: [{ handlers: ['nope'] }] })).toThrow(
      /alerts\.routes\[0\]\.handlers: unknown handler "nope"/,
    );
    expect(() => new AlertManager({ handlers: [], dedupWindowMs: -1 })).toThrow(/alerts\.dedupWindowMs/);
    expect(() => webhookAlertHandler({ url: 'ftp://x' })).toThrow(/alerts\.webhook\.url/);
  });

  it('removes secrets and e-mail addresses from every part of any alert (property)', () => {
    const secret = fc.stringMatching(/^[A-Za-z0-9]{12,30}$/);
    const wrap = fc.constantFrom(
      (s: string) => `Authorization: Bearer ${s}`,
      (s: string) => `password=${s}`,
      (s: string) => `https://user:${s}@example.com/x`,
      (s: string) => `X-Amz-Signature=${s}&a=b`,
      (s: string) => `mail ${s.toLowerCase()}@example.org now`,
      (s: string) => `token: ${s}`,
    );
    fc.assert(
      fc.property(fc.string(), secret, wrap, fc.string(), (prefix, s, w, suffix) => {
        const text = `${prefix} ${w(s)} ${suffix}`;
        const alert = sanitiseAlert({
          name: 'A',
          severity: 'error',
          summary: text,
          labels: { where: text },
          details: { nested: { msg: text, list: [text] }, password: s },
          fingerprint: 'f',
          status: 'firing',
          startsAt: '',
          count: 1,
        });
        const json = JSON.stringify(alert);
        return !json.includes(s) && !json.includes(s.toLowerCase() + '@');
      }),
      { numRuns: 300 },
    );
  });
});

describe('alert handlers', () => {
  it('rotates the JSON-lines file', async () => {
    const dir = await tempDir();
    const path = join(dir, 'alerts.jsonl');
    const h = jsonlFileAlertHandler({ path, maxBytes: 300, keep: 2 });
    const m = new AlertManager({ handlers: [h], maxPerMinute: 1000 });
    for (let i = 0; i < 10; i++)
      m.raise({
        name: 'R',
        severity: 'info',
        summary: `alert number ${String(i)}`,
        labels: { i: String(i) },
      });
    await m.close();
    const files = (await readdir(dir)).sort();
    expect(files).toEqual(['alerts.jsonl', 'alerts.jsonl.1', 'alerts.jsonl.2']);
    const last = (await readFile(path, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Alert);
    expect(last.at(-1)?.summary).toBe('alert number 9');
  });

  it('never blocks the caller while the webhook is down, and delivers once it is back', async () => {
    const received: unknown[] = [];
    let up = false;
    const server: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        if (!up) {
          res.writeHead(503).end();
          return;
        }
        received.push(JSON.parse(body));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise((r) => {
          server.close(() => {
            r();
          });
        }),
    );
    const url = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
    const clock = new VirtualClock(0);
    const policy = retry({ maxAttempts: 50, backoff: constant(1000), clock });
    const retried = retriesOf(policy);
    const h = webhookAlertHandler({ url, maxQueue: 2, clock, retryPolicy: policy });
    const m = new AlertManager({ handlers: [h], clock });
    const started = performance.now();
    for (let i = 0; i < 4; i++)
      m.raise({ name: 'W', severity: 'error', summary: `s${String(i)}`, labels: { i: String(i) } });
    expect(performance.now() - started).toBeLessThan(1000);
    await retried(1); // the first batch was refused (503) and waits for its next attempt
    expect(received).toEqual([]);
    expect(h.dropped).toBe(1); // one batch in flight, two queued: the oldest queued one was dropped
    up = true;
    await clock.advance(1000);
    await m.close();
    expect(received.map((b) => (b as { alerts: Alert[] }).alerts[0]?.summary)).toEqual(['s0', 's2', 's3']);
    expect(h.delivered).toBe(3);
  });

  it('retries a webhook whose port refuses connections, then drops the batch', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => {
      server.close(() => {
        r();
      });
    });
    const clock = new VirtualClock(0);
    const policy = retry({ maxAttempts: 3, backoff: constant(1000), clock });
    const retried = retriesOf(policy);
    let retries = 0;
    policy.on('retry', () => {
      retries++;
    });
    const h = webhookAlertHandler({
      url: `http://127.0.0.1:${String(port)}/hook`,
      clock,
      retryPolicy: policy,
    });
    void h.send([
      sanitiseAlert({
        name: 'A',
        severity: 'info',
        summary: 's',
        labels: {},
        details: {},
        fingerprint: 'f',
        status: 'firing',
        startsAt: '',
        count: 1,
      }),
    ]);
    for (let n = 1; n <= 2; n++) {
      await retried(n); // attempt n was refused: its backoff timer is pending
      await clock.advance(1000);
    }
    await h.close?.();
    expect(retries).toBe(2);
    expect(h.dropped).toBe(1);
    expect(h.delivered).toBe(0);
  });

  it('posts in the Alertmanager v2 shape', async () => {
    const bodies: unknown[] = [];
    const paths: string[] = [];
    const server = createServer((req, res) => {
      let body = '';
      paths.push(req.url ?? '');
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        bodies.push(JSON.parse(body));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise((r) => {
          server.close(() => {
            r();
          });
        }),
    );
    const h = alertmanagerHandler(`http://127.0.0.1:${String((server.address() as AddressInfo).port)}`);
    const m = new AlertManager({ handlers: [h] });
    m.raise({
      name: 'DiskSpaceLow',
      severity: 'critical',
      summary: 'disk full, mail ops@example.com',
      labels: { path: '/data' },
    });
    await m.close();
    expect(paths).toEqual(['/api/v2/alerts']);
    const [alert] = bodies[0] as {
      labels: Record<string, string>;
      annotations: Record<string, string>;
      startsAt: string;
    }[];
    expect(alert?.labels).toEqual({ path: '/data', alertname: 'DiskSpaceLow', severity: 'critical' });
    expect(alert?.annotations.summary).toBe('disk full, mail [REDACTED]');
  });
});
