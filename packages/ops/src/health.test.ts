import { describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import { HealthRegistry, httpStatusOfHealth } from './health.js';

describe('HealthRegistry', () => {
  it('answers health+json with component:measurement keys, observed values and output only on failure', async () => {
    const clock = new VirtualClock(Date.UTC(2026, 0, 1));
    const health = new HealthRegistry({ clock, serviceId: 'svc', version: '1' });
    health.markStarted();
    health.register({
      name: 'db:connections',
      componentType: 'datastore',
      run: () => ({ status: 'pass', observedValue: 3, observedUnit: 'connections', output: 'ignored' }),
    });
    health.register({
      name: 'cache:hitRatio',
      critical: false,
      run: () => ({ status: 'fail', observedValue: 0.1, output: 'cold cache' }),
    });
    const report = await health.report('readiness');
    expect(report.status).toBe('warn');
    expect(report.serviceId).toBe('svc');
    expect(report.checks['db:connections']).toEqual([
      {
        componentType: 'datastore',
        status: 'pass',
        observedValue: 3,
        observedUnit: 'connections',
        time: '2026-01-01T00:00:00.000Z',
      },
    ]);
    expect(report.checks['cache:hitRatio']?.[0]?.output).toBe('cold cache');
    expect(httpStatusOfHealth(report.status)).toBe(200);
  });

  it('fails when a critical check throws, and redacts secrets in its output', async () => {
    const health = new HealthRegistry();
    health.markStarted();
    health.register({
      name: 'db:ping',
      run: () => {
        throw new Error('connect failed password=hunter2');
      },
    });
    const report = await health.report();
    expect(report.status).toBe('fail');
    expect(httpStatusOfHealth(report.status)).toBe(503);
    expect(report.checks['db:ping']?.[0]?.output).not.toContain('hunter2');
  });

  it('times a hanging check out with its own timeout and aborts its signal', async () => {
    const clock = new VirtualClock();
    const health = new HealthRegistry({ clock });
    let aborted = false;
    health.register({
      name: 'upstream:ping',
      timeoutMs: 1000,
      run: (signal) =>
        new Promise(() => {
          signal.addEventListener('abort', () => {
            aborted = true;
          });
        }),
    });
    const pending = health.runCheck('upstream:ping');
    await clock.advance(999);
    let settled = false;
    void pending.then(() => {
      settled = true;
    });
    await Promise.resolve();
    expect(settled).toBe(false);
    await clock.advance(1);
    const entry = await pending;
    expect(entry.status).toBe('fail');
    expect(entry.output).toMatch(/timed out after 1000 ms/);
    expect(aborted).toBe(true);
  });

  it('never starts a check again while a run is in flight', async () => {
    const health = new HealthRegistry();
    let runs = 0;
    let release!: () => void;
    health.register({
      name: 'slow:check',
      run: () => {
        runs++;
        return new Promise((r) => {
          release = () => {
            r('pass');
          };
        });
      },
    });
    const a = health.runCheck('slow:check');
    const b = health.runCheck('slow:check');
    const c = health.report();
    await Promise.resolve();
    expect(runs).toBe(1);
    release();
    await Promise.all([a, b, c]);
    expect(runs).toBe(1);
    const again = health.runCheck('slow:check');
    expect(runs).toBe(1);
    await Promise.resolve();
    await Promise.resolve();
    expect(runs).toBe(2);
    release();
    expect((await again).status).toBe('pass');
  });

  it('keeps liveness, readiness and startup apart; readiness fails while starting and at shutdown', async () => {
    const health = new HealthRegistry();
    health.register({ name: 'loop:lag', probes: ['liveness'], run: () => 'pass' });
    health.register({ name: 'db:ping', probes: ['readiness'], run: () => 'fail' });
    expect((await health.report('liveness')).status).toBe('pass');
    expect((await health.report('startup')).status).toBe('fail');
    health.markStarted();
    expect((await health.report('startup')).status).toBe('pass');
    expect((await health.report('liveness')).checks['db:ping']).toBeUndefined();
    expect((await health.report('readiness')).status).toBe('fail');
    health.markShuttingDown();
    const r = await health.report('readiness');
    expect(r.checks['process:shutdown']?.[0]?.status).toBe('fail');
    expect((await health.report('liveness')).status).toBe('pass');
  });

  it('runs interval checks in the background and answers from the last result', async () => {
    const clock = new VirtualClock();
    const health = new HealthRegistry({ clock });
    let runs = 0;
    health.register({
      name: 'bg:check',
      intervalMs: 10_000,
      run: () => {
        runs++;
        return 'pass';
      },
    });
    health.start();
    await clock.advance(0);
    expect(runs).toBe(1);
    await health.report();
    expect(runs).toBe(1);
    await clock.advance(10_000);
    expect(runs).toBe(2);
    health.stop();
    await clock.advance(50_000);
    expect(runs).toBe(2);
  });

  it('rejects malformed and duplicate names', () => {
    const health = new HealthRegistry();
    expect(() => health.register({ name: 'nocolon', run: () => 'pass' })).toThrow(/component:measurement/);
    health.register({ name: 'a:b', run: () => 'pass' });
    expect(() => health.register({ name: 'a:b', run: () => 'pass' })).toThrow(/already/);
  });
});
