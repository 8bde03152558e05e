import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { correlationId, withCorrelation } from 'keel';
import { chaos, type ChaosProxy } from 'keel/chaos';
import { openQueue, type Queue } from '@keel/queue';
import { PG_URL, postgresAvailable, until } from './queue-support.js';

const withPg = await postgresAvailable();

/** The test's PostgreSQL URL with its host and port replaced by the proxy's. */
function through(proxy: ChaosProxy): string {
  const u = new URL(PG_URL);
  u.hostname = '127.0.0.1';
  u.port = String(proxy.port);
  return u.toString();
}

function upstreamOf(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || '5432'}`;
}

describe.skipIf(!withPg)('queue on PostgreSQL behind the chaos proxy', () => {
  const schema = `keel_queue_rc_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  const queues: Queue[] = [];
  let proxy: ChaosProxy | undefined;

  afterEach(async () => {
    await proxy?.enable();
    for (const q of queues.splice(0)) await q.close(100).catch(() => undefined);
    await proxy?.close();
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });

  const open = async <T>(url: string): Promise<Queue<T>> => {
    const q = await openQueue<T>(url, { name: 'rc', schema, retention: false, connectTimeoutMs: 1000 });
    queues.push(q);
    return q;
  };

  it('refuses enqueues with a retryable QUEUE_STORE_UNAVAILABLE during an outage, and workers resume by themselves', async () => {
    proxy = await chaos.proxy({ upstream: upstreamOf(PG_URL) });
    const url = through(proxy);
    const producer = await open<number>(url);
    const workers = [await open<number>(url), await open<number>(url)];
    const handled: number[] = [];
    let gate: Promise<void> = Promise.resolve();
    let open_ = (): void => undefined;
    for (const w of workers)
      w.process(
        async ({ payload }) => {
          handled.push(payload);
          await gate;
        },
        { concurrency: 4, prefetch: 0, leaseMs: 5000, pollMs: 5 },
      );
    await Promise.all(Array.from({ length: 20 }, (_, i) => producer.enqueue(i)));
    await until(async () => (await producer.stats()).completed === 20, 'the first 20 items');

    // Hold the next handlers mid-flight, then cut PostgreSQL away under them.
    gate = new Promise<void>((r) => {
      open_ = r;
    });
    await Promise.all(Array.from({ length: 20 }, (_, i) => producer.enqueue(100 + i)));
    await until(() => handled.length >= 28, 'handlers of both workers to be in flight');
    await proxy.disable();

    const refused = await producer.enqueue(999).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toMatchObject({ code: 'QUEUE_STORE_UNAVAILABLE', retryable: true });
    expect((refused as Error).message).toContain(`127.0.0.1:${String(proxy.port)}/test`);
    await expect(producer.stats()).rejects.toMatchObject({ code: 'QUEUE_STORE_UNAVAILABLE' });
    // The held handlers finish during the outage: their completions wait for the store.
    open_();
    await until(() => workers.every((w) => !w.storeAvailable), 'both workers to notice the outage');

    await proxy.enable();
    // Enqueue works again without reopening anything.
    await until(
      () =>
        producer.enqueue(200).then(
          () => true,
          () => false,
        ),
      'enqueue to work again',
    );
    await until(
      async () => (await producer.stats()).completed === 41,
      'every item to complete after the outage',
    );
    expect(workers.every((w) => w.storeAvailable)).toBe(true);
    const expected = [
      ...Array.from({ length: 20 }, (_, i) => i),
      ...Array.from({ length: 20 }, (_, i) => 100 + i),
      200,
    ];
    expect([...handled].sort((a, b) => a - b)).toEqual(expected);
    expect((await producer.stats()).dead).toBe(0);
  });

  it('keeps accepting enqueues in a local spool during an outage and hands them over in order', async () => {
    proxy = await chaos.proxy({ upstream: upstreamOf(PG_URL) });
    const dir = await mkdtemp(path.join(tmpdir(), 'keel-queue-spool-'));
    const producer = await openQueue<number>(through(proxy), {
      name: 'rc',
      schema,
      retention: false,
      connectTimeoutMs: 1000,
      spool: path.join(dir, 'spool.db'),
    });
    queues.push(producer);
    const worker = await open<number>(PG_URL);
    const handled: number[] = [];
    const correlations = new Map<number, string | undefined>();
    worker.process(
      ({ payload }) => {
        handled.push(payload);
        correlations.set(payload, correlationId());
        return Promise.resolve();
      },
      { pollMs: 5 },
    );
    // Each item is enqueued by a request of its own: its id goes through the spool with it.
    const send = (from: number, to: number) =>
      Promise.all(
        Array.from({ length: to - from }, (_, i) =>
          withCorrelation(`req-${String(from + i)}`, () => producer.enqueue(from + i, { partitionKey: 'p' })),
        ),
      );
    expect((await send(0, 5)).every((r) => r.spooled !== true)).toBe(true);
    await proxy.disable();
    const during = await send(5, 15);
    expect(during.every((r) => r.spooled === true)).toBe(true);
    await proxy.enable();
    // Sent while the spool still holds items: they queue behind them, keeping the order.
    await send(15, 20);
    await until(() => handled.length >= 20, 'all 20 items to be handled');
    await until(async () => (await producer.stats()).spooled === 0, 'the spool to empty');
    expect(handled).toEqual(Array.from({ length: 20 }, (_, i) => i));
    for (const n of handled) expect(correlations.get(n)).toBe(`req-${String(n)}`);
    await until(async () => (await worker.stats()).completed === 20, 'all 20 completions committed');
    await rm(dir, { recursive: true, force: true });
  });

  it('fails to open with QUEUE_STORE_UNAVAILABLE naming the store but not the password', async () => {
    proxy = await chaos.proxy({ upstream: upstreamOf(PG_URL), enabled: false });
    const u = new URL(through(proxy));
    u.password = 'hunter2-secret';
    const err = await openQueue(u.toString(), { schema, connectTimeoutMs: 500, startup: false }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'QUEUE_STORE_UNAVAILABLE', retryable: true });
    expect(JSON.stringify(err)).not.toContain('hunter2');
    expect((err as Error).message).not.toContain('hunter2');
    expect((err as Error).message).toContain(`127.0.0.1:${String(proxy.port)}/test`);
  });
});
