import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { faultyFs } from 'keel/chaos';
import type { RunningGateway, RunOptions } from '@keel/gateway';
import type { Alert, HealthReport, RecoveryState, StatfsResult } from '@keel/ops';
import { VirtualClock } from 'keel';
import {
  checkStatus,
  fileAlerts,
  ready,
  startRunHarness,
  until,
  type RunHarness,
} from './gateway-run-support.js';

let h: RunHarness;

beforeAll(async () => {
  h = await startRunHarness({ name: 'recovery' });
});

afterAll(async () => {
  await h.close();
});

interface Started {
  r: RunningGateway;
  clock: VirtualClock;
  alertsFile: string;
}

async function start(extra: RunOptions = {}): Promise<Started> {
  const clock = new VirtualClock(Date.now());
  const r = await h.start(
    { diskCheckIntervalSeconds: '60' },
    { clock, guard: { retryAttempts: 1 }, ...extra },
  );
  return { r, clock, alertsFile: h.alertsFile(r) };
}

const readOk = (r: RunningGateway, key: string): Promise<string | null> => h.readOk(r, key);

const recoveryOf = (r: RunningGateway, check: string): RecoveryState | undefined =>
  r.recovery.states()[check];

async function status(r: RunningGateway): Promise<{
  recovery: Record<string, RecoveryState>;
  alerts: Alert[];
  health: HealthReport;
}> {
  return (await (await fetch(`${r.admin.url}/status`)).json()) as {
    recovery: Record<string, RecoveryState>;
    alerts: Alert[];
    health: HealthReport;
  };
}

async function readiness(r: RunningGateway, check: string): Promise<string | undefined> {
  return checkStatus((await ready(r)).report, check);
}

/** The alerts in `file`, as name, status and the check they are about. */
async function alertStates(r: RunningGateway, file: string): Promise<[string, string, string][]> {
  return (await fileAlerts(r, file)).map((a) => [a.name, a.status, a.labels.check ?? '']);
}

/**
 * RecoveryFailed no longer fires, and `file` holds it for `check` both firing and then resolved.
 */
async function expectRecoveryFailedResolved(r: RunningGateway, file: string, check: string): Promise<void> {
  expect(r.alerts.firing().map((a) => a.name)).not.toContain('RecoveryFailed');
  expect(await alertStates(r, file)).toEqual(
    expect.arrayContaining([
      ['RecoveryFailed', 'firing', check],
      ['RecoveryFailed', 'resolved', check],
    ]),
  );
}

/**
 * A file system of 1000 blocks of 4 KiB whose use is what other programs hold plus what the
 * cache holds, so evicting from the cache frees space on it as on a real disk.
 */
function sharedDisk(): {
  statfs: (p: string) => Promise<StatfsResult>;
  others: { bytes: number };
  bind: (r: RunningGateway) => void;
} {
  const BSIZE = 4096;
  const BLOCKS = 1000;
  const others = { bytes: 0 };
  let gateway: RunningGateway | undefined;
  return {
    others,
    bind: (r) => {
      gateway = r;
    },
    statfs: () => {
      const used = others.bytes + (gateway?.gateway.cache?.stats().sizeBytes ?? 0);
      const bavail = Math.max(0, Math.floor((BSIZE * BLOCKS - used) / BSIZE));
      return Promise.resolve({ bsize: BSIZE, blocks: BLOCKS, bfree: bavail, bavail, files: 0, ffree: 0 });
    },
  };
}

describe('gateway recovery', () => {
  it('evicts the cache down to the warning level when its disk is critical, and disk:utilization passes again', async () => {
    const disk = sharedDisk();
    disk.others.bytes = 2_900_000;
    const { r, clock, alertsFile } = await start({ statfs: disk.statfs });
    disk.bind(r);
    const cache = r.gateway.cache;
    for (const key of ['a.bin', 'c.bin', 'd.bin']) expect(await readOk(r, key)).toBe('MISS');
    await r.gateway.idle();
    expect(cache?.stats().sizeBytes).toBe(650_000);
    expect(await readiness(r, 'disk:utilization')).toBe('warn'); // 86.7 %: warning, nothing to recover
    expect(recoveryOf(r, 'disk:utilization')?.status).toBe('idle');

    disk.others.bytes = 3_200_000; // with the cache: 94 % used, critical
    await clock.advance(60_000); // the periodic disk check
    await until(() => recoveryOf(r, 'disk:utilization')?.status === 'recovered', 'disk recovery', clock);

    // Under 80 % of 4,096,000 bytes again: the cache kept at most 3,276,800 - 3,200,000 bytes.
    expect(cache?.stats().sizeBytes).toBeLessThanOrEqual(76_800);
    expect(cache?.stats().evictions).toBeGreaterThan(0);
    expect(await readiness(r, 'disk:utilization')).not.toBe('fail');
    const s = await status(r);
    expect(s.recovery['disk:utilization']).toMatchObject({
      status: 'recovered',
      attempts: 0,
      history: [{ attempt: 1, outcome: 'recovered' }],
    });
    expect(s.recovery['cache:writable']?.status).toBe('idle');
    expect(s.recovery['origin:reachable']).toBeUndefined(); // nothing to do locally for the origin
    expect((await alertStates(r, alertsFile)).map(([name]) => name)).not.toContain('RecoveryFailed');
    // What was evicted is fetched again.
    expect(await readOk(r, 'a.bin')).toBe('MISS');
  });

  it('raises RecoveryFailed when the whole cache is not enough to relieve the disk, and resolves it once space returns', async () => {
    const disk = sharedDisk();
    const { r, clock, alertsFile } = await start({ statfs: disk.statfs });
    disk.bind(r);
    await readOk(r, 'a.bin');
    await r.gateway.idle();
    disk.others.bytes = 3_800_000; // 93 % used by others alone
    await clock.advance(60_000);
    // Attempts 1 s and 2 s apart (the default backoff), each evicting (real file I/O) and
    // re-checking; an attempt's record comes with the timer of the next one.
    for (let attempt = 1; attempt <= 3; attempt++) {
      await until(
        () => (recoveryOf(r, 'disk:utilization')?.history.length ?? 0) >= attempt,
        `disk recovery attempt ${attempt}`,
        clock,
      );
      if (attempt < 3) await clock.advance(2_000);
    }
    await until(() => recoveryOf(r, 'disk:utilization')?.status === 'exhausted', 'giving up', clock);
    const state = recoveryOf(r, 'disk:utilization');
    expect(state?.history.map((h) => h.outcome)).toEqual(['action-failed', 'action-failed', 'action-failed']);
    expect(state?.history[0]?.error).toContain('something else is filling this file system');
    expect(r.gateway.cache?.stats().sizeBytes).toBe(0);
    const firing = r.alerts.firing().find((a) => a.name === 'RecoveryFailed');
    expect(firing).toMatchObject({ severity: 'critical', labels: { check: 'disk:utilization' } });
    expect((await status(r)).alerts.map((a) => a.name)).toContain('RecoveryFailed');

    disk.others.bytes = 1_000_000;
    await clock.advance(60_000);
    await until(() => recoveryOf(r, 'disk:utilization')?.status === 'recovered', 'disk recovered', clock);
    await expectRecoveryFailedResolved(r, alertsFile, 'disk:utilization');
  });

  it('probes the cache directory while bypassed, records the failed attempt, and recovers once the disk takes writes', async () => {
    const fs = faultyFs();
    const { r, clock } = await start({
      cacheFs: fs,
      cacheBypassProbeMs: 30_000,
      statfs: sharedDisk().statfs, // an empty disk: only the cache's directory is at fault
    });
    expect(await readOk(r, 'a.bin')).toBe('MISS');
    await r.gateway.idle();
    const stop = await h.fillDisk(r, fs);
    await until(
      () => (recoveryOf(r, 'cache:writable')?.history.length ?? 0) >= 1,
      'first cache recovery attempt',
      clock,
    );
    const first = recoveryOf(r, 'cache:writable')?.history[0];
    expect(first).toMatchObject({ attempt: 1, outcome: 'action-failed' });
    expect(first?.error).toContain(`cache directory ${r.gateway.cache?.dir ?? '?'} is still not usable`);
    expect(recoveryOf(r, 'cache:writable')?.status).toBe('waiting');
    expect(await readiness(r, 'cache:writable')).toBe('fail');

    stop();
    // The next attempt (1 s later) probes at once: the cache leaves bypass well before its own
    // probe, due 30 s after it entered bypass.
    await clock.advance(2_000);
    await until(() => recoveryOf(r, 'cache:writable')?.status === 'recovered', 'cache recovery', clock);
    expect(r.gateway.cache?.bypassed).toBe(false);
    expect(await readiness(r, 'cache:writable')).toBe('pass');
    expect((await status(r)).recovery['cache:writable']).toMatchObject({ status: 'recovered', attempts: 0 });
    expect(r.alerts.firing()).toEqual([]);
    expect(await readOk(r, 'd.bin')).toBe('MISS');
    await r.gateway.idle();
    expect(await readOk(r, 'd.bin')).toBe('HIT');
  });

  it('raises RecoveryFailed after three failed probes of an unwritable cache directory, and resolves it when the cache recovers', async () => {
    const fs = faultyFs();
    const { r, clock, alertsFile } = await start({
      cacheFs: fs,
      cacheBypassProbeMs: 30_000,
      statfs: sharedDisk().statfs, // an empty disk: only the cache's directory is at fault
    });
    await readOk(r, 'a.bin');
    await r.gateway.idle();
    const stop = await h.fillDisk(r, fs);
    for (let attempt = 1; attempt <= 3; attempt++) {
      await until(
        () => (recoveryOf(r, 'cache:writable')?.history.length ?? 0) >= attempt,
        `cache recovery attempt ${attempt}`,
        clock,
      );
      // Attempts are spaced by the recovery's backoff (1 s, 2 s).
      if (attempt < 3) await clock.advance(2_000);
    }
    await until(() => recoveryOf(r, 'cache:writable')?.status === 'exhausted', 'giving up', clock);
    expect(recoveryOf(r, 'cache:writable')?.history.map((h) => h.outcome)).toEqual([
      'action-failed',
      'action-failed',
      'action-failed',
    ]);
    expect(r.alerts.firing().map((a) => [a.name, a.labels])).toEqual(
      expect.arrayContaining([['RecoveryFailed', { check: 'cache:writable' }]]),
    );
    expect((await status(r)).recovery['cache:writable']?.status).toBe('exhausted');

    stop();
    await clock.advance(30_000); // the cache's own probe finds the disk usable
    await until(() => recoveryOf(r, 'cache:writable')?.status === 'recovered', 'cache recovered', clock);
    await expectRecoveryFailedResolved(r, alertsFile, 'cache:writable');
  });
});
