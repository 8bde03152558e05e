import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import { HealthRegistry } from './health.js';
import { AutoRecovery } from './recovery.js';
import { AlertManager } from './alerts/manager.js';
import type { Alert } from './alerts/types.js';

function setup(healthyAfterActions: number) {
  const clock = new VirtualClock(0);
  const health = new HealthRegistry({ clock });
  let actions = 0;
  const actionTimes: number[] = [];
  health.register({ name: 'db:connection', run: () => (actions >= healthyAfterActions ? 'pass' : 'fail') });
  const sent: Alert[] = [];
  const alerts = new AlertManager({
    clock,
    handlers: [
      {
        name: 'mem',
        send: (a) => {
          sent.push(...a);
        },
      },
    ],
  });
  const recovery = new AutoRecovery(health, {
    check: 'db:connection',
    clock,
    alerts,
    maxAttempts: 3,
    backoffMs: (n) => 1000 * 2 ** (n - 2),
    action: () => {
      actions++;
      actionTimes.push(clock.now());
    },
  });
  return { clock, health, recovery, alerts, sent, actionTimes, count: () => actions };
}

describe('AutoRecovery', () => {
  it('runs the action when the check fails and records a recovery', async () => {
    const t = setup(1);
    await t.health.report();
    await t.clock.advance(0);
    await t.alerts.flush();
    expect(t.count()).toBe(1);
    const state = t.recovery.state();
    expect(state.status).toBe('recovered');
    expect(state.history).toEqual([{ at: new Date(0).toISOString(), attempt: 1, outcome: 'recovered' }]);
  });

  it('spaces attempts by the backoff and gives up after maxAttempts with a critical alert', async () => {
    const t = setup(Infinity);
    await t.health.report();
    await t.clock.advance(0);
    expect(t.actionTimes).toEqual([0]);
    await t.clock.advance(999);
    expect(t.actionTimes).toEqual([0]);
    await t.clock.advance(1);
    expect(t.actionTimes).toEqual([0, 1000]);
    await t.clock.advance(2000);
    expect(t.actionTimes).toEqual([0, 1000, 3000]);
    await t.clock.advance(60_000);
    expect(t.count()).toBe(3);
    expect(t.recovery.state().status).toBe('exhausted');
    expect(t.recovery.state().history.map((h) => h.outcome)).toEqual([
      'still-failing',
      'still-failing',
      'still-failing',
    ]);
    await t.alerts.flush();
    expect(t.sent.map((a) => [a.name, a.severity, a.status])).toEqual([
      ['RecoveryFailed', 'critical', 'firing'],
    ]);
    // More failing checks do not restart the attempts.
    await t.health.report();
    await t.clock.advance(60_000);
    expect(t.count()).toBe(3);
  });

  it('resolves the alert and resets when the check passes again', async () => {
    let healthy = false;
    const clock = new VirtualClock(0);
    const health = new HealthRegistry({ clock });
    health.register({ name: 'q:stuck', run: () => (healthy ? 'pass' : 'fail') });
    const sent: Alert[] = [];
    const alerts = new AlertManager({
      clock,
      handlers: [
        {
          name: 'mem',
          send: (a) => {
            sent.push(...a);
          },
        },
      ],
    });
    const recovery = new AutoRecovery(health, {
      check: 'q:stuck',
      clock,
      alerts,
      maxAttempts: 1,
      action: () => {
        throw new Error('token=abc still stuck');
      },
    });
    await health.report();
    await clock.advance(0);
    expect(recovery.state().status).toBe('exhausted');
    expect(recovery.state().history[0]?.outcome).toBe('action-failed');
    expect(recovery.state().history[0]?.error).not.toContain('abc');
    healthy = true;
    await health.report();
    await alerts.flush();
    expect(recovery.state().status).toBe('recovered');
    expect(sent.map((a) => a.status)).toEqual(['firing', 'resolved']);
  });

  it('continues from a persisted state after a restart', async () => {
    const clock = new VirtualClock(0);
    const health = new HealthRegistry({ clock });
    health.register({ name: 'db:connection', run: () => 'fail' });
    let actions = 0;
    const states: unknown[] = [];
    const recovery = new AutoRecovery(health, {
      check: 'db:connection',
      clock,
      maxAttempts: 3,
      initialState: { check: 'db:connection', status: 'idle', attempts: 2, history: [] },
      onChange: (s) => states.push(s),
      action: () => {
        actions++;
      },
    });
    await health.report();
    await clock.runAll();
    expect(actions).toBe(1);
    expect(recovery.state().status).toBe('exhausted');
    expect(states.length).toBeGreaterThan(0);
  });

  it('aborts an action that hangs past its timeout and counts the attempt as failed', async () => {
    const clock = new VirtualClock(0);
    const health = new HealthRegistry({ clock });
    health.register({ name: 'db:connection', run: () => 'fail' });
    const signals: AbortSignal[] = [];
    const recovery = new AutoRecovery(health, {
      check: 'db:connection',
      clock,
      maxAttempts: 2,
      actionTimeoutMs: 5000,
      backoffMs: () => 1000,
      action: (signal) => {
        signals.push(signal);
        return new Promise<void>(() => undefined); // never settles
      },
    });
    await health.report();
    await clock.advance(0);
    expect(recovery.state().status).toBe('recovering');
    await clock.advance(4999);
    expect(signals[0]?.aborted).toBe(false);
    await clock.advance(1);
    expect(signals[0]?.aborted).toBe(true);
    expect(recovery.state().history[0]).toMatchObject({ attempt: 1, outcome: 'action-failed' });
    expect(recovery.state().history[0]?.error).toContain('timed out after 5000 ms');
    await clock.advance(1000 + 5000);
    expect(signals).toHaveLength(2);
    expect(recovery.state().status).toBe('exhausted');
    recovery.close();
  });

  it('rejects a timeout that is not a positive number, naming the setting', () => {
    const health = new HealthRegistry({ clock: new VirtualClock(0) });
    expect(
      () => new AutoRecovery(health, { check: 'x', actionTimeoutMs: 0, action: () => undefined }),
    ).toThrow('recovery[x].actionTimeoutMs');
  });

  it('reloads attempts and history from its state file after a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'keel-ops-recovery-'));
    try {
      const file = join(dir, 'recovery.json');
      const clock = new VirtualClock(0);
      const health = new HealthRegistry({ clock });
      health.register({ name: 'db:connection', run: () => 'fail' });
      let actions = 0;
      const options = {
        check: 'db:connection',
        clock,
        maxAttempts: 3,
        backoffMs: () => 1000,
        action: () => {
          actions++;
        },
      };
      const first = await AutoRecovery.persistent(health, options, file);
      await health.report();
      await clock.advance(0);
      await clock.advance(1000);
      expect(actions).toBe(2);
      first.close();
      await first.flush();
      // A new process: one attempt left.
      const clock2 = new VirtualClock(0);
      const health2 = new HealthRegistry({ clock: clock2 });
      health2.register({ name: 'db:connection', run: () => 'fail' });
      const second = await AutoRecovery.persistent(health2, { ...options, clock: clock2 }, file);
      expect(second.state().history.map((h) => h.attempt)).toEqual([1, 2]);
      await health2.report();
      await clock2.runAll();
      expect(actions).toBe(3);
      expect(second.state().status).toBe('exhausted');
      second.close();
      await second.flush();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
