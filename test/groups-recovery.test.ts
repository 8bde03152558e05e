import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { constant, correlationId, keelError, VirtualClock, withCorrelation, type KeelError } from 'keel';
import {
  DEFAULT_OPERATION_TIMEOUT_MS,
  ExecutorRegistry,
  GroupManager,
  type ExecutorContext,
  type GroupManagerOptions,
  type GroupRepository,
} from '@keel/groups';
import { createMetrics } from '@keel/ops';
import {
  deferred,
  postgresAvailable,
  postgresFixture,
  sqliteFixture,
  until,
  type StoreFixture,
} from './groups-support.js';

const withPg = await postgresAvailable();
const stores: [string, () => Promise<StoreFixture>][] = [['sqlite', sqliteFixture]];
if (withPg) stores.push(['postgres', postgresFixture]);

const LEASE_MS = 10_000;
/** Shorter than the 10-minute default (diagnose's unit tests cover that), so a test walks fewer heartbeats. */
const STUCK_AFTER_MS = 6 * LEASE_MS;

describe.each(stores)('group recovery on %s', (_name, makeFixture) => {
  let fixture: StoreFixture;
  let repo: GroupRepository;
  let clock: VirtualClock;
  let executors: ExecutorRegistry;
  let journal: string[];
  /** Payloads whose forward hangs (until its signal aborts) on the first call, with the reason it saw. */
  let hangOnce: Set<string>;
  let aborted: Map<string, KeelError>;
  /** Payloads whose forward hangs and ignores its signal altogether. */
  let deaf: Set<string>;
  /** Correlation ids seen by forward calls, by payload. */
  let seen: Map<string, { current: string | undefined; ctx: string | undefined }>;
  /** While true, `quorum…` payloads fail with a cluster error. */
  let quorumLost: boolean;

  const newManager = (r: GroupRepository, owner: string, extra: Partial<GroupManagerOptions> = {}) =>
    new GroupManager({
      repository: r,
      executors,
      clock,
      leaseMs: LEASE_MS,
      owner,
      stuckAfterMs: STUCK_AFTER_MS,
      retry: { maxAttempts: 1, backoff: constant(0) },
      ...extra,
    });

  beforeEach(async () => {
    fixture = await makeFixture();
    repo = await fixture.open();
    clock = new VirtualClock(1_700_000_000_000);
    journal = [];
    hangOnce = new Set();
    aborted = new Map();
    deaf = new Set();
    seen = new Map();
    quorumLost = true;
    executors = new ExecutorRegistry();
    executors.register<string, string>('step', {
      async forward(payload, ctx) {
        seen.set(payload, { current: correlationId(), ctx: ctx.correlationId });
        if (deaf.has(payload)) await new Promise(() => undefined);
        if (hangOnce.delete(payload)) {
          await new Promise<void>((_, reject) => {
            ctx.signal.addEventListener('abort', () => {
              aborted.set(payload, ctx.signal.reason as KeelError);
              reject(ctx.signal.reason as Error);
            });
          });
        }
        if (payload.startsWith('quorum') && quorumLost)
          throw keelError('NO_QUORUM', 'the cluster lost its quorum', {}, { kind: 'transient' });
        if (payload.startsWith('bad')) throw keelError('INVALID_INPUT', `bad payload ${payload}`);
        journal.push(`+${payload}`);
      },
      rollback(payload) {
        journal.push(`-${payload}`);
        return Promise.resolve();
      },
    });
    executors.register<{ table: string }, null>('drop-temp', {
      forward(payload) {
        journal.push(`drop ${payload.table}`);
        return Promise.resolve();
      },
    });
  });

  afterEach(async () => {
    await fixture.dispose();
  });

  const op = (name: string, extra: { timeoutMs?: number } = {}) => ({
    executor: 'step',
    target: `t/${name}`,
    forward: name,
    rollback: name,
    ...extra,
  });

  /**
   * Advances the clock in steps shorter than a heartbeat. With `keepAlive`, each step waits until
   * that group's heartbeat has landed (its lease runs at least half a lease ahead), as it would on a
   * real clock: the test is about progress, not about a lease lapsing on a busy machine.
   */
  async function advance(ms: number, keepAlive?: string): Promise<void> {
    for (let left = ms; left > 0; left -= LEASE_MS / 4) {
      await clock.advance(Math.min(left, LEASE_MS / 4));
      if (keepAlive !== undefined)
        await until(
          async () => ((await repo.getGroup(keepAlive))?.leaseExpiresAt ?? 0) > clock.now() + LEASE_MS / 2,
          'the heartbeat',
        );
    }
  }

  it('gives each operation a timeout (30 min by default) and fails it with TIMEOUT when it passes', async () => {
    const manager = newManager(repo, 'worker-a');
    const id = await manager.create({
      name: 'timeouts',
      steps: [op('a'), op('b', { timeoutMs: 5_000 })],
      onFailure: 'stop',
    });
    expect((await manager.operations(id)).map((o) => o.timeoutMs)).toEqual([
      DEFAULT_OPERATION_TIMEOUT_MS,
      5_000,
    ]);
    deaf.add('b'); // ignores its signal: the run must not wait for it
    const run = manager.run(id);
    run.catch(() => undefined);
    await until(async () => (await manager.progress(id)).current.length === 1 && seen.has('b'), 'b running');
    await clock.advance(5_000);
    await expect(run).rejects.toMatchObject({ status: 'failed' });
    const ops = await manager.operations(id);
    expect(ops[1]).toMatchObject({ status: 'failed', error: { code: 'TIMEOUT' } });
    expect(ops[1]?.error?.message).toMatch(/did not finish within its timeout of 5000 ms/);
    expect(await manager.diagnose(id)).toMatchObject({
      errorKind: 'timeout',
      strategy: 'retry-with-backoff',
    });
  });

  it('a group default operation timeout applies to every operation that sets none, appended ones too', async () => {
    const manager = newManager(repo, 'worker-a');
    const id = await manager.create({
      name: 'defaults',
      steps: [op('a'), op('b', { timeoutMs: 7_000 })],
      operationTimeoutMs: 60_000,
    });
    await manager.append(id, [op('c')]);
    expect((await manager.operations(id)).map((o) => o.timeoutMs)).toEqual([60_000, 7_000, 60_000]);
    await expect(manager.create({ name: 'bad', steps: [op('x', { timeoutMs: -1 })] })).rejects.toMatchObject({
      code: 'INVALID_CONFIG',
    });
  });

  it('finds a group stuck by progress while its worker keeps the lease, takes it over and retries it', async () => {
    const worker = newManager(repo, 'worker-a');
    const rescuer = newManager(await fixture.open(), 'rescuer');
    const id = await worker.create({ name: 'hung', steps: [op('a'), op('b'), op('c')] });
    hangOnce.add('b');
    const run = worker.run(id);
    run.catch(() => undefined);
    await until(async () => (await worker.progress(id)).current.some((c) => c.seq === 1), 'b running');
    await advance(STUCK_AFTER_MS, id);
    // The lease is alive (heartbeats), so only progress tells that b hangs.
    expect(((await repo.getGroup(id))?.leaseExpiresAt ?? 0) > clock.now()).toBe(true);
    expect(await rescuer.stuck()).toEqual([]);
    await advance(LEASE_MS, id);
    expect((await rescuer.stuck()).map((g) => g.id)).toEqual([id]);
    expect(await rescuer.diagnose(id)).toMatchObject({
      stuck: 'no-progress',
      errorKind: 'timeout',
      strategy: 'retry-with-backoff',
    });
    const health = await rescuer.healthCheck().check();
    expect(health.status).toBe('fail');
    expect(health.output).toContain(`${id} (no-progress)`);

    const recovered = rescuer.recover({ backoffMs: 0 });
    // The worker finds the lease gone at its next heartbeat and cancels b: beat once it is gone.
    await until(async () => (await repo.getGroup(id))?.leaseOwner !== 'worker-a', 'the takeover');
    await advance(LEASE_MS);
    expect((await recovered).actions).toEqual([
      { id, action: 'recovered', strategy: 'retry-with-backoff', status: 'completed' },
    ]);
    await expect(run).rejects.toMatchObject({ code: 'GROUP_LEASE_LOST' });
    expect(aborted.get('b')?.code).toBe('GROUP_LEASE_LOST');
    expect(journal).toEqual(['+a', '+b', '+c']);
    expect((await rescuer.logs(id)).map((l) => l.message)).toEqual(
      expect.arrayContaining([expect.stringContaining('rescuer took the group over from worker-a')]),
    );
  });

  it('progress reports keep a long operation from being found stuck', async () => {
    const batches = [deferred(), deferred(), deferred(), deferred()];
    executors.register<null, null>('long', {
      async forward(_p, ctx: ExecutorContext) {
        for (const [i, batch] of batches.entries()) {
          await batch.promise;
          await ctx.progress({ message: `batch ${String(i + 1)}`, done: i + 1, total: batches.length });
        }
      },
    });
    const manager = newManager(repo, 'worker-a');
    const id = await manager.create({
      name: 'long',
      steps: [{ executor: 'long', target: 'rows', forward: null }],
    });
    const run = manager.run(id);
    await until(async () => (await manager.progress(id)).current.length === 1, 'long running');
    for (let i = 1; i <= 3; i++) {
      await advance(STUCK_AFTER_MS / 2, id);
      batches[i - 1]?.resolve();
      await until(
        async () => (await manager.progress(id)).current[0]?.progress?.done === i,
        `report ${String(i)}`,
      );
      expect(await manager.stuck()).toEqual([]);
    }
    // Longer than stuckAfterMs into the operation, and not stuck: it has just reported.
    expect((await manager.progress(id)).current[0]?.progress).toMatchObject({
      message: 'batch 3',
      done: 3,
      total: 4,
    });
    expect((await manager.diagnose(id)).sinceLastProgressMs).toBe(0);
    batches[3]?.resolve();
    await expect(run).resolves.toMatchObject({ status: 'completed' });
  });

  it('recovery in the worker’s own process stops its run and rolls back a group that asks for it', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const manager = newManager(repo, 'worker-a', { metrics });
    const id = await manager.create({ name: 'hung', steps: [op('a'), op('b')], onStuck: 'rollback' });
    hangOnce.add('b');
    const run = manager.run(id);
    run.catch(() => undefined);
    await until(async () => (await manager.progress(id)).current.some((c) => c.seq === 1), 'b running');
    await advance(STUCK_AFTER_MS + LEASE_MS, id);
    expect(await manager.diagnose(id)).toMatchObject({ stuck: 'no-progress', strategy: 'roll-back' });
    const report = await manager.recover();
    expect(report.actions).toEqual([
      { id, action: 'recovered', strategy: 'roll-back', status: 'rolled_back' },
    ]);
    await expect(run).rejects.toMatchObject({ code: 'GROUP_LEASE_LOST' });
    expect(aborted.get('b')?.code).toBe('GROUP_LEASE_LOST');
    expect(journal).toEqual(['+a', '-b', '-a']);
    expect((await manager.get(id))?.lastError).toMatchObject({ code: 'GROUP_STUCK' });
    expect(await metrics.render()).toMatch(
      /^keel_group_recoveries_total\{strategy="roll-back",outcome="recovered"\} 1$/m,
    );
  });

  it('a stuck group marked manual is left for a person', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const manager = newManager(repo, 'worker-a', { metrics });
    const id = await manager.create({ name: 'hung', steps: [op('a')], onStuck: 'manual' });
    hangOnce.add('a');
    const run = manager.run(id);
    run.catch(() => undefined);
    await until(async () => (await manager.progress(id)).current.length === 1, 'a running');
    await advance(STUCK_AFTER_MS + LEASE_MS, id);
    const report = await manager.recover();
    expect(report.actions).toEqual([expect.objectContaining({ id, action: 'skipped', strategy: 'manual' })]);
    expect(aborted.size).toBe(0);
    const text = await metrics.render();
    expect(text).toMatch(/^keel_group_recoveries_total\{strategy="manual",outcome="skipped"\} 1$/m);
    expect(text).not.toMatch(/^keel_group_recoveries_total\{[^}]*outcome="recovered"\}/m);
    await manager.stop(id, { mode: 'rollback' });
    await expect(run).resolves.toEqual({ id, status: 'rolled_back' });
  });

  it('a stop with rollback cancels the operation in flight at once and rolls back, in this process', async () => {
    const manager = newManager(repo, 'worker-a');
    const id = await manager.create({ name: 'stop', steps: [op('a'), op('b'), op('c')] });
    deaf.add('b'); // ignores its signal: the stop must not wait for it
    const run = manager.run(id);
    await until(async () => (await manager.progress(id)).current.some((c) => c.seq === 1), 'b running');
    await manager.stop(id, { mode: 'rollback' });
    await expect(run).resolves.toEqual({ id, status: 'rolled_back' });
    expect(journal).toEqual(['+a', '-b', '-a']);
    expect((await manager.operations(id)).map((o) => o.status)).toEqual([
      'rolled_back',
      'rolled_back',
      'pending',
    ]);
  });

  it('a stop with rollback from another process cancels the operation at the next heartbeat', async () => {
    const worker = newManager(repo, 'worker-a');
    const operator = newManager(await fixture.open(), 'operator');
    const id = await worker.create({ name: 'stop', steps: [op('a'), op('b'), op('c')] });
    hangOnce.add('b');
    const run = worker.run(id);
    await until(async () => (await worker.progress(id)).current.some((c) => c.seq === 1), 'b running');
    await expect(operator.stop(id, { mode: 'rollback' })).resolves.toEqual({ id, status: 'stopping' });
    await advance(LEASE_MS / 2);
    await expect(run).resolves.toEqual({ id, status: 'rolled_back' });
    expect(aborted.get('b')?.code).toBe('GROUP_STOPPED');
    expect(journal).toEqual(['+a', '-b', '-a']);
  });

  it('removes orphaned temporary resources after their retention time and reports them until then', async () => {
    executors.register<string, null>('with-temp', {
      async forward(table, ctx) {
        await ctx.registerTemporary(table, { executor: 'drop-temp', payload: { table } });
        if (table === 'tmp_kept') await ctx.releaseTemporary(table);
        if (table === 'tmp_failing') throw keelError('INVALID_INPUT', 'bad rows');
        if (table === 'tmp_live') await manager.pause(ctx.groupId);
      },
    });
    const manager = newManager(repo, 'worker-a');
    const temp = (table: string) => ({ executor: 'with-temp', target: table, forward: table });
    const failed = await manager.create({ name: 'orphan', steps: [temp('tmp_failing')] });
    await manager.run(failed).catch(() => undefined);
    const done = await manager.create({ name: 'released', steps: [temp('tmp_kept')] });
    await manager.run(done);
    // A live group keeps its resource: this one pauses itself after its first operation.
    const live = await manager.create({ name: 'live', steps: [temp('tmp_live'), op('later')] });
    await expect(manager.run(live)).resolves.toEqual({ id: live, status: 'paused' });

    const check = manager.healthCheck();
    expect((await check.check()).observedValue).toMatchObject({ orphanedResources: 0 });
    expect((await manager.cleanup()).resourcesRemoved).toEqual([]);
    await clock.advance(3_600_000);
    const before = await check.check();
    expect(before.status).toBe('warn');
    expect(before.output).toContain(`1 orphaned temporary resource(s) [${failed}/tmp_failing]`);
    const report = await manager.cleanup();
    expect(report.resourcesRemoved).toEqual([{ groupId: failed, name: 'tmp_failing' }]);
    expect(journal).toContain('drop tmp_failing');
    expect(journal).not.toContain('drop tmp_kept');
    expect(journal).not.toContain('drop tmp_live');
    expect((await check.check()).observedValue).toMatchObject({ orphanedResources: 0 });
  });

  it('refuses a temporary resource whose cleanup executor is not registered', async () => {
    let refusal: unknown;
    executors.register<null, null>('bad-temp', {
      async forward(_p, ctx) {
        refusal = await ctx
          .registerTemporary('t', { executor: 'nope', payload: null })
          .catch((e: unknown) => e);
      },
    });
    const manager = newManager(repo, 'worker-a');
    const id = await manager.create({
      name: 'bad',
      steps: [{ executor: 'bad-temp', target: 't', forward: null }],
    });
    await manager.run(id);
    expect(refusal).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('"nope"') });
    expect(await repo.listResources()).toEqual([]);
  });

  it('checks the cluster before retrying a group that failed on a cluster error', async () => {
    const manager = newManager(repo, 'worker-a');
    const id = await manager.create({ name: 'cluster', steps: [op('quorum-a')], onFailure: 'stop' });
    await manager.run(id).catch(() => undefined);
    expect(await manager.diagnose(id)).toMatchObject({
      errorKind: 'cluster',
      strategy: 'check-cluster-and-retry',
    });
    let healthy = false;
    const checkCluster = (): Promise<boolean> => Promise.resolve(healthy);
    expect((await manager.recover({ checkCluster })).actions).toEqual([
      {
        id,
        action: 'skipped',
        strategy: 'check-cluster-and-retry',
        reason: 'the cluster is still unhealthy',
      },
    ]);
    expect((await manager.get(id))?.status).toBe('failed');
    healthy = true;
    quorumLost = false;
    expect((await manager.recover({ checkCluster })).actions).toEqual([
      { id, action: 'recovered', strategy: 'check-cluster-and-retry', status: 'completed' },
    ]);
    expect(journal).toEqual(['+quorum-a']);
  });

  it('runs retention by itself when opened with a schedule', async () => {
    const manager = newManager(repo, 'worker-a', { retention: { everyMs: 3_600_000, failedMs: 3_600_000 } });
    const id = await manager.create({ name: 'fails', steps: [op('bad-x')] });
    await manager.run(id).catch(() => undefined);
    expect((await manager.get(id))?.status).toBe('rolled_back');
    await clock.advance(3_600_000);
    await until(() => manager.retentionStatus() !== undefined, 'the first scheduled cleanup');
    await clock.advance(3_600_000);
    await until(async () => (await manager.get(id)) === undefined, 'the scheduled cleanup to delete it');
    expect(manager.retentionStatus()).toMatchObject({ ok: true });
    await manager.close();
    await clock.advance(10 * 3_600_000);
  });

  it('reports pending groups over a threshold and drift between desired and actual state', async () => {
    const manager = newManager(repo, 'worker-a');
    for (let i = 0; i < 3; i++) await manager.create({ name: `p${String(i)}`, steps: [op(`p${String(i)}`)] });
    const actual = new Map([['a', 1]]);
    const desired = new Map([
      ['a', 1],
      ['b', 2],
    ]);
    const check = manager.healthCheck({
      maxPending: 2,
      drift: { actual: () => actual, desired: () => desired },
    });
    const result = await check.check();
    expect(result.status).toBe('warn');
    expect(result.observedValue).toMatchObject({ pending: 3, drift: 1 });
    expect(result.output).toContain('3 pending groups (threshold 2)');
    expect(result.output).toContain('1 difference(s) between desired and actual state');
    actual.set('b', 2);
    expect(
      (
        await manager
          .healthCheck({ maxPending: 3, drift: { actual: () => actual, desired: () => desired } })
          .check()
      ).status,
    ).toBe('pass');
  });

  it('runs operations under the correlation id of the request that created or appended them, also after a takeover', async () => {
    const worker = newManager(repo, 'worker-a');
    const id = await withCorrelation('req-create', () =>
      worker.create({ name: 'correlated', steps: [op('a'), op('b')] }),
    );
    await withCorrelation('req-append', () => worker.append(id, [op('c')]));
    hangOnce.add('b');
    const run = worker.run(id);
    run.catch(() => undefined);
    await until(async () => (await worker.progress(id)).current.some((c) => c.seq === 1), 'b running');
    // A rescuer outside any request takes the hung group over and finishes it.
    const rescuer = newManager(await fixture.open(), 'rescuer');
    await advance(STUCK_AFTER_MS + LEASE_MS, id);
    expect(correlationId()).toBeUndefined();
    const report = await rescuer.recover({ backoffMs: 0 });
    expect(report.actions).toMatchObject([{ id, action: 'recovered', status: 'completed' }]);
    expect(seen.get('a')).toEqual({ current: 'req-create', ctx: 'req-create' });
    expect(seen.get('b')).toEqual({ current: 'req-create', ctx: 'req-create' });
    expect(seen.get('c')).toEqual({ current: 'req-append', ctx: 'req-append' });
    expect((await rescuer.get(id))?.correlationId).toBe('req-create');
  });
});
