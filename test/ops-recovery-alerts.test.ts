import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { keelError, retry, constant, VirtualClock } from 'keel';
import { chaos } from 'keel/chaos';
import { ExecutorRegistry, GroupManager, openGroupRepository } from '@keel/groups';
import { AutoRecovery, createMetrics, HealthRegistry, ProcessRestarts } from '@keel/ops';
import { createOutageQueue, openQueue } from '@keel/queue';
import { PG_URL, postgresAvailable } from './pg-support.js';
import { until } from './queue-support.js';

const RULES = path.join(import.meta.dirname, '../packages/ops/rules/recovery.rules.yml');
const RULE_TESTS = path.join(import.meta.dirname, '../packages/ops/rules/recovery.rules.test.yml');
const withPg = await postgresAvailable('the queue store metric through the chaos proxy');

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
if (!hasPromtool) {
  const msg = 'promtool not found (Debian package `prometheus`): the recovery alert rules are not checked';
  if (process.env.CI) throw new Error(msg);
  console.warn(`SKIPPING recovery alert rule check: ${msg}`);
}

/** The value of one series in a Prometheus text exposition, or undefined. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keel-recovery-alerts-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('recovery alert rules', () => {
  it.skipIf(!hasPromtool)('pass promtool check rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS: 6 rules found');
  });

  it.skipIf(!hasPromtool)('fire on the series they are meant for (promtool test rules)', () => {
    const run = spawnSync('promtool', ['test', 'rules', RULE_TESTS], { encoding: 'utf8' });
    expect(run.stdout + run.stderr).toContain('SUCCESS');
    expect(run.status).toBe(0);
  });

  it('are shipped in @keel/ops', () => {
    const pkg = JSON.parse(
      readFileSync(path.join(import.meta.dirname, '../packages/ops/package.json'), 'utf8'),
    ) as { files: string[] };
    expect(pkg.files).toContain('rules');
  });

  it('name only metrics the queue, groups, recovery and restarts register, with the values they describe', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const queue = await openQueue<string>(path.join(dir, 'queue.db'), {
      name: 'orders',
      metrics,
      depthThreshold: 2,
      retention: false,
    });
    for (const p of ['a', 'b', 'c']) await queue.enqueue(p, { maxAttempts: 1 });
    const repo = await openGroupRepository(path.join(dir, 'groups.db'));
    const groups = new GroupManager({
      repository: repo,
      executors: new ExecutorRegistry(),
      metrics,
      leaseMs: 1000,
    });
    const id = await groups.create({
      name: 'crashed',
      steps: [{ executor: 'x', target: 't', forward: null }],
    });
    await repo.updateGroup(id, { status: 'running' }); // a worker that died at once: no lease
    const health = new HealthRegistry();
    health.register({ name: 'db:up', run: () => 'fail' });
    const recovery = new AutoRecovery(health, {
      check: 'db:up',
      action: () => undefined,
      maxAttempts: 1,
      metrics,
    });
    const restarts = await ProcessRestarts.start({ dir: path.join(dir, 'state'), metrics });

    expect(await queue.healthCheck().run()).toMatchObject({
      status: 'warn',
      observedValue: { pending: 3, dead: 0 },
      output: expect.stringContaining('3 pending items in queue "orders" (threshold 2)'),
    });
    expect((await queue.healthCheck({ maxDepth: 3 }).run()).status).toBe('pass');
    let text = await metrics.render();
    expect(value(text, 'keel_queue_items{queue="orders",state="pending"}')).toBe(3);
    expect(value(text, 'keel_queue_depth_threshold{queue="orders"}')).toBe(2);
    expect(value(text, 'keel_queue_store_up{queue="orders"}')).toBe(1);
    expect(value(text, 'keel_groups_stuck')).toBe(1);
    expect(value(text, 'keel_groups{status="running"}')).toBe(1);

    queue.process(() => Promise.reject(keelError('INVALID_INPUT', 'bad order')), { pollMs: 5 });
    await until(async () => (await queue.stats()).dead === 3, 'three dead letters');
    await health.runCheck('db:up');
    await until(() => recovery.state().status === 'exhausted', 'recovery to give up');
    text = await metrics.render();
    expect(value(text, 'keel_queue_outcomes_total{queue="orders",outcome="dead"}')).toBe(3);
    expect(value(text, 'keel_queue_items{queue="orders",state="dead"}')).toBe(3);
    expect(value(text, 'keel_recovery_attempts_total{check="db:up",outcome="still-failing"}')).toBe(1);
    expect(value(text, 'keel_recoveries_exhausted_total{check="db:up"}')).toBe(1);

    const names = [...new Set(readFileSync(RULES, 'utf8').match(/\bkeel_[a-z0-9_]+/g) ?? [])];
    expect(names.length).toBeGreaterThanOrEqual(6);
    for (const name of names) expect(text, name).toMatch(new RegExp(`^${name}(\\{[^}]*\\})? \\d`, 'm'));
    recovery.close();
    restarts.close();
    await queue.close();
    await repo.close();
  });

  it("count a recovery that worked, and give the oldest pending item's age in seconds", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const health = new HealthRegistry();
    let up = false;
    health.register({ name: 'cache:up', run: () => (up ? 'pass' : 'fail') });
    const recovery = new AutoRecovery(health, {
      check: 'cache:up',
      action: () => {
        up = true;
      },
      maxAttempts: 3,
      metrics,
    });
    await health.runCheck('cache:up');
    await until(() => recovery.state().status === 'recovered', 'the recovery to work');
    let text = await metrics.render();
    expect(value(text, 'keel_recovery_attempts_total{check="cache:up",outcome="recovered"}')).toBe(1);
    expect(value(text, 'keel_recovery_attempts_total{check="cache:up",outcome="still-failing"}')).toBe(0);
    recovery.close();

    const clock = new VirtualClock(1_700_000_000_000);
    const queue = await openQueue<string>(path.join(dir, 'aged.db'), {
      name: 'aged',
      metrics,
      clock,
      retention: false,
    });
    text = await metrics.render();
    expect(value(text, 'keel_queue_oldest_pending_age_seconds{queue="aged"}')).toBe(0);
    await queue.enqueue('first');
    await clock.advance(30_000);
    await queue.enqueue('second');
    await clock.advance(60_000);
    text = await metrics.render();
    expect(value(text, 'keel_queue_oldest_pending_age_seconds{queue="aged"}')).toBe(90);
    await queue.close();
  });

  it('count calls queued during an outage and their replays by outcome', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const queue = await openQueue<number>(path.join(dir, 'outage.db'), { name: 'writes', retention: false });
    let down = true;
    const written: number[] = [];
    const outage = createOutageQueue<number, void>({
      queue,
      policy: retry({ maxAttempts: 1, backoff: constant(0) }),
      operation: (n) => {
        if (down)
          return Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
        written.push(n);
        return Promise.resolve();
      },
      retryEveryMs: 10,
      checkEveryMs: 10,
      metrics,
    });
    await outage.start();
    expect(await outage.runOrQueue(1)).toMatchObject({ status: 'queued', reason: 'unavailable' });
    expect(await outage.runOrQueue(2)).toMatchObject({ status: 'queued' });
    await until(
      async () =>
        value(await metrics.render(), 'keel_queue_replays_total{queue="writes",outcome="waited"}')! > 0,
      'a replay that waits',
    );
    down = false;
    await until(() => written.length === 2, 'both replayed');
    expect(await outage.runOrQueue(3)).toMatchObject({ status: 'done' });
    const text = await metrics.render();
    expect(value(text, 'keel_queue_outage_calls_total{queue="writes",outcome="queued-unavailable"}')).toBe(2);
    expect(value(text, 'keel_queue_outage_calls_total{queue="writes",outcome="done"}')).toBe(1);
    expect(value(text, 'keel_queue_replays_total{queue="writes",outcome="replayed"}')).toBe(2);
    outage.close();
    await queue.close(100);
  });

  it.skipIf(!withPg)(
    'keel_queue_store_up drops to 0 while PostgreSQL is unreachable and comes back',
    async () => {
      const schema = `keel_metrics_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
      const server = new URL(PG_URL);
      const proxy = await chaos.proxy({ upstream: `${server.hostname}:${server.port || '5432'}` });
      server.hostname = '127.0.0.1';
      server.port = String(proxy.port);
      const metrics = createMetrics({ defaultMetrics: false });
      const queue = await openQueue(server.toString(), {
        schema,
        metrics,
        retention: false,
        connectTimeoutMs: 300,
        queryTimeoutMs: 300,
      });
      try {
        expect(value(await metrics.render(), 'keel_queue_store_up{queue="default"}')).toBe(1);
        await proxy.disable();
        await until(
          async () => value(await metrics.render(), 'keel_queue_store_up{queue="default"}') === 0,
          'the store seen down',
        );
        expect(await queue.healthCheck().run()).toMatchObject({
          status: 'fail',
          output: expect.stringContaining('is unavailable'),
        });
        await proxy.enable();
        await until(
          async () => value(await metrics.render(), 'keel_queue_store_up{queue="default"}') === 1,
          'the store back up',
        );
      } finally {
        await proxy.enable();
        await queue.close(100);
        await proxy.close();
        const client = new pg.Client({ connectionString: PG_URL });
        await client.connect();
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await client.end();
      }
    },
  );
});
