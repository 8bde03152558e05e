import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { chaos, type ChaosProxy } from 'keel/chaos';
import { openGroupRepository } from '@keel/groups';
import { HealthRegistry } from '@keel/ops';
import { openQueue, type OpenAttempt } from '@keel/queue';
import { PG_URL, postgresAvailable } from './queue-support.js';

const withPg = await postgresAvailable();

describe.skipIf(!withPg)('a database that is down when the service starts', () => {
  const schema = `keel_startup_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  let proxy: ChaosProxy | undefined;
  const closers: (() => Promise<void>)[] = [];

  afterEach(async () => {
    for (const close of closers.splice(0)) await close().catch(() => undefined);
    await proxy?.close();
    proxy = undefined;
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });

  /** PostgreSQL behind a proxy that starts disabled (the database is down). */
  async function downDatabase(): Promise<string> {
    const u = new URL(PG_URL);
    // Listening once fixes its port; enabled again later, it listens on the same one.
    proxy = await chaos.proxy({ upstream: `${u.hostname}:${u.port || '5432'}` });
    await proxy.disable();
    u.hostname = '127.0.0.1';
    u.port = String(proxy.port);
    return u.toString();
  }

  it('openQueue waits with backoff, health says "starting" meanwhile, and it opens once the database is up', async () => {
    const url = await downDatabase();
    const health = new HealthRegistry();
    health.markStarted();
    const waits: OpenAttempt[] = [];
    let seen: string | undefined;
    const opening = openQueue(url, {
      name: 'orders',
      schema,
      connectTimeoutMs: 300,
      retention: false,
      startup: {
        initialDelayMs: 50,
        maxWaitMs: 20_000,
        health,
        onWaiting: (attempt) => {
          waits.push(attempt);
          if (waits.length === 2) {
            void health.report('readiness').then((r) => {
              seen = r.checks['queue:orders']?.[0]?.output;
              void proxy?.enable();
            });
          }
        },
      },
    });
    const queue = await opening;
    closers.push(() => queue.close(100));
    expect(waits.length).toBeGreaterThanOrEqual(2);
    expect(waits[0]?.error.code).toBe('QUEUE_STORE_UNAVAILABLE');
    expect(seen).toMatch(
      /^starting: waiting for the queue store at postgres:\/\/127\.0\.0\.1:\d+\/test .*attempt \d+ failed/,
    );
    // Open: the check is gone and readiness passes.
    const after = await health.report('readiness');
    expect(after.checks['queue:orders']).toBeUndefined();
    expect(after.status).toBe('pass');
    await queue.enqueue('works');
    expect((await queue.stats()).pending).toBe(1);
  });

  it('openQueue gives up after maxWaitMs with the store error, saying how long it waited', async () => {
    const url = await downDatabase();
    const started = performance.now();
    const err = await openQueue(url, {
      schema,
      connectTimeoutMs: 200,
      startup: { initialDelayMs: 50, maxWaitMs: 600 },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'QUEUE_STORE_UNAVAILABLE', retryable: true });
    expect((err as Error).message).toMatch(
      /gave up after \d+ attempt\(s\) over \d+ ms of waiting for it at start/,
    );
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it('the groups store waits for the database the same way', async () => {
    const url = await downDatabase();
    const health = new HealthRegistry();
    health.markStarted();
    let attempts = 0;
    let seen: string | undefined;
    const repo = await openGroupRepository(url, {
      schema,
      connectTimeoutMs: 300,
      startup: {
        initialDelayMs: 50,
        maxWaitMs: 20_000,
        health,
        onWaiting: () => {
          attempts++;
          if (attempts === 2) {
            void health.report('startup').then((r) => {
              seen = r.checks['groups:store']?.[0]?.output;
              void proxy?.enable();
            });
          }
        },
      },
    });
    closers.push(() => repo.close());
    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(seen).toMatch(/^starting: waiting for the groups store at postgres:\/\/127\.0\.0\.1:\d+\/test/);
    expect(await repo.listGroups()).toEqual([]);
    expect((await health.report('startup')).checks['groups:store']).toBeUndefined();
  });
});
