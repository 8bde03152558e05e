import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import { AlertManager, createMetrics, HealthRegistry, ProcessRestarts, type Alert } from '@keel/ops';

const CHILD = path.join(import.meta.dirname, 'fixtures', 'restarts-child.ts');

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keel-restarts-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface ChildReport {
  previous: { pid: number; startedAt: string; clean: boolean; lastState: unknown } | null;
  alerts: { name: string; severity: string; details: Record<string, unknown> }[];
  pid: number;
}

/** Starts the child; `clean` ends it with a clean shutdown, `hang` is SIGKILLed once it is ready. */
function runChild(mode: 'clean' | 'hang'): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, mode], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (mode === 'hang' && out.includes('READY')) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('exit', () => {
      const line = (tag: string): unknown => {
        const m = new RegExp(`^${tag} (.*)$`, 'm').exec(out);
        return m?.[1] === undefined ? undefined : (JSON.parse(m[1]) as unknown);
      };
      resolve({
        previous: line('PREVIOUS') as ChildReport['previous'],
        alerts: (line('ALERTS') ?? []) as ChildReport['alerts'],
        pid: child.pid ?? -1,
      });
    });
  });
}

describe('restarts noticed across real processes', () => {
  it('a process killed with SIGKILL is reported as restarted at the next start, with its start time and last state', async () => {
    const first = await runChild('clean');
    expect(first.previous).toBeNull();
    expect(first.alerts).toEqual([]);
    const second = await runChild('clean');
    expect(second.previous).toMatchObject({ pid: first.pid, clean: true });
    expect(second.alerts).toEqual([]);
    const killed = await runChild('hang');
    expect(killed.alerts).toEqual([]);
    const after = await runChild('clean');
    expect(after.previous).toMatchObject({
      pid: killed.pid,
      clean: false,
      lastState: { phase: 'serving', pid: killed.pid },
    });
    expect(after.alerts).toEqual([
      {
        name: 'ProcessRestarted',
        severity: 'warning',
        details: expect.objectContaining({
          previousPid: killed.pid,
          previousStartedAt: after.previous?.startedAt,
          lastState: { phase: 'serving', pid: killed.pid },
        }),
      },
    ]);
    expect((statSync(path.join(dir, 'run.json')).mode & 0o777).toString(8)).toBe('600');
    expect((statSync(dir).mode & 0o777).toString(8)).toBe('700');
  }, 60_000);
});

describe('ProcessRestarts', () => {
  const sent: Alert[] = [];
  const alertsFor = (clock: VirtualClock): AlertManager =>
    new AlertManager({ clock, handlers: [{ name: 'memory', send: (a) => void sent.push(...a) }] });
  beforeEach(() => {
    sent.length = 0;
  });

  it('raises a restart loop after the threshold of unclean restarts within the window, and resolves it once the process stays up', async () => {
    const clock = new VirtualClock(1_700_000_000_000);
    const starts: ProcessRestarts[] = [];
    // The first run and three restarts, each run crashing a minute after it started.
    for (let i = 0; i < 4; i++) {
      const alerts = alertsFor(clock);
      starts.push(
        await ProcessRestarts.start({ dir, alerts, clock, loopThreshold: 3, loopWindowMs: 600_000 }),
      );
      await alerts.flush();
      await clock.advance(60_000);
    }
    const names = sent.filter((a) => a.status === 'firing').map((a) => `${a.name}:${a.severity}`);
    expect(names).toEqual([
      'ProcessRestarted:warning',
      'ProcessRestarted:warning',
      'ProcessRestarted:warning',
      'ProcessRestartLoop:critical',
    ]);
    expect(starts[3]?.snapshot()).toMatchObject({ totals: { clean: 0, unclean: 3 } });
    const alerts = alertsFor(clock);
    const fourth = await ProcessRestarts.start({
      dir,
      alerts,
      clock,
      loopThreshold: 3,
      loopWindowMs: 600_000,
    });
    await clock.advance(600_000);
    await alerts.flush();
    expect(alerts.firing()).toEqual([]);
    expect(sent.filter((a) => a.status === 'resolved').map((a) => a.name)).toEqual(
      expect.arrayContaining(['ProcessRestarted', 'ProcessRestartLoop']),
    );
    for (const s of [...starts, fourth]) s.close();
  });

  it('unclean restarts outside the window do not make a loop', async () => {
    const clock = new VirtualClock(1_700_000_000_000);
    for (let i = 0; i < 4; i++) {
      const alerts = alertsFor(clock);
      (await ProcessRestarts.start({ dir, alerts, clock, loopThreshold: 3, loopWindowMs: 600_000 })).close();
      await alerts.flush();
      await clock.advance(400_000);
    }
    expect(sent.map((a) => a.name)).not.toContain('ProcessRestartLoop');
  });

  it('keeps the restart counts across runs in metrics, and the health of each check as the last state', async () => {
    const clock = new VirtualClock(1_700_000_000_000);
    const first = await ProcessRestarts.start({ dir, clock });
    await first.markCleanShutdown();
    await (await ProcessRestarts.start({ dir, clock })).recordState({ phase: 'draining' });
    const health = new HealthRegistry({ clock });
    health.register({ name: 'db:up', run: () => 'fail' });
    const metrics = createMetrics({ defaultMetrics: false });
    const third = await ProcessRestarts.start({ dir, clock, metrics, health });
    expect(third.previous).toMatchObject({ clean: false, lastState: { phase: 'draining' } });
    await health.runCheck('db:up');
    await third.markCleanShutdown();
    const text = await metrics.render();
    expect(text).toContain('keel_process_restarts_total{shutdown="clean"} 1');
    expect(text).toContain('keel_process_restarts_total{shutdown="unclean"} 1');
    expect(text).toContain('keel_process_unclean_restarts_recent 1');
    const fourth = await ProcessRestarts.start({ dir, clock });
    expect(fourth.previous).toMatchObject({ clean: true, lastState: { checks: { 'db:up': 'fail' } } });
  });
});
