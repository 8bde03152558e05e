import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { constant, correlationId, keelError, retry, withCorrelation } from 'keel';
import { createOutageQueue } from '@keel/queue';
import {
  postgresAvailable,
  postgresQueueFixture,
  sqliteQueueFixture,
  until,
  type QueueFixture,
} from './queue-support.js';

const CHILD = path.join(import.meta.dirname, 'fixtures', 'queue-correlation-child.ts');
const withPg = await postgresAvailable();
const stores: [string, () => Promise<QueueFixture>][] = [['sqlite', sqliteQueueFixture]];
if (withPg) stores.push(['postgres', postgresQueueFixture]);

describe.each(stores)('correlation ids through the queue on %s', (_name, makeFixture) => {
  let fx: QueueFixture;
  beforeEach(async () => {
    fx = await makeFixture();
  });
  afterEach(async () => {
    await fx.dispose();
  });

  it('stores the id of the request that enqueued an item and runs its handler under it', async () => {
    const q = await fx.open<string>({ retention: false });
    await withCorrelation('req-42', () => q.enqueue('a'));
    await q.enqueue('b'); // outside any request
    expect((await q.list('pending')).map((i) => [i.payload, i.correlationId])).toEqual([
      ['a', 'req-42'],
      ['b', null],
    ]);
    const seen: [string, string | undefined, string | undefined][] = [];
    expect(correlationId()).toBeUndefined();
    q.process(
      ({ payload, correlationId: fromJob }) => {
        seen.push([payload, fromJob, correlationId()]);
        return Promise.resolve();
      },
      { pollMs: 5 },
    );
    await until(() => seen.length === 2, 'both handled');
    expect(seen).toEqual([
      ['a', 'req-42', 'req-42'],
      ['b', undefined, undefined],
    ]);
  });

  it('a call an outage queued is replayed under the id of the request that made it', async () => {
    const q = await fx.open<number>({ retention: false });
    let down = true;
    const calls: { n: number; correlationId: string | undefined }[] = [];
    const outage = createOutageQueue<number, void>({
      queue: q,
      policy: retry({ maxAttempts: 1, backoff: constant(0) }),
      operation: (n) => {
        calls.push({ n, correlationId: correlationId() });
        if (down) return Promise.reject(keelError('CONNECTION_REFUSED', 'the dependency is down'));
        return Promise.resolve();
      },
      retryEveryMs: 10,
      checkEveryMs: 10,
    });
    await outage.start();
    const queued = await withCorrelation('req-7', () => outage.runOrQueue(7));
    expect(queued).toMatchObject({ status: 'queued', error: { correlationId: 'req-7' } });
    await until(() => calls.length >= 2, 'a replay');
    down = false;
    await until(async () => (await q.stats()).completed === 1, 'the replay to succeed');
    expect(calls.every((c) => c.correlationId === 'req-7')).toBe(true);
    outage.close();
  });
});

describe('correlation ids across a crash', () => {
  let fx: QueueFixture;
  beforeEach(async () => {
    fx = await sqliteQueueFixture();
  });
  afterEach(async () => {
    await fx.dispose();
  });

  it('an item whose worker was killed mid-handler runs again under the id it was enqueued with', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, fx.target], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const firstSeen = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /CLAIMED (\S+)/.exec(out);
        if (m?.[1] !== undefined) resolve(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`child exited (${String(code)}): ${out}`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(firstSeen).toBe('req-crash');

    const q = await fx.open<string>({ name: 'corr', retention: false });
    let seen: string | undefined;
    q.process(
      () => {
        seen = correlationId();
        return Promise.resolve();
      },
      { pollMs: 5 },
    );
    // The dead worker's 500 ms lease expires, then the item is claimed again here.
    await until(() => seen !== undefined, 'the item to run again');
    expect(seen).toBe('req-crash');
  }, 60_000);
});
