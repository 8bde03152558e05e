import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { keelError } from '../errors/index.js';
import { VirtualClock } from '../time/index.js';
import { exponential } from './backoff.js';
import { consecutive } from './breaker/consecutive.js';
import { countWindow } from './breaker/count-window.js';
import { timeWindow } from './breaker/time-window.js';
import { circuitBreaker, countsAsFailure, type CircuitBreakerPolicy } from './circuit-breaker.js';

const boom = (): Error => Object.assign(new Error('reset'), { code: 'ECONNRESET' });
const fail = () => Promise.reject(boom());
const ok = () => Promise.resolve('ok');

async function run(b: CircuitBreakerPolicy, outcome: boolean): Promise<'ok' | 'failed' | 'rejected'> {
  try {
    await b.execute(outcome ? ok : fail);
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code === 'CIRCUIT_OPEN' ? 'rejected' : 'failed';
  }
}

describe('circuitBreaker', () => {
  it('opens after 5 consecutive failures and rejects without calling', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({ clock, window: consecutive(5) });
    for (let i = 0; i < 4; i++) expect(await run(b, false)).toBe('failed');
    expect(b.state).toBe('closed');
    expect(await run(b, false)).toBe('failed');
    expect(b.state).toBe('open');
    let called = false;
    const err = await b
      .execute(() => {
        called = true;
      })
      .catch((e: unknown) => e);
    expect(called).toBe(false);
    expect(err).toMatchObject({
      code: 'CIRCUIT_OPEN',
      retryable: false,
      details: { state: 'open', retryAfterMs: 10_000 },
    });
    expect((err as Error).stack ?? '').not.toMatch(/\n\s+at /);
    expect(b.stats()).toMatchObject({ trips: 1, rejections: 1, failures: 6 });
  });

  it('a success resets the consecutive count', async () => {
    const b = circuitBreaker({ clock: new VirtualClock(), window: consecutive(3) });
    for (const o of [false, false, true, false, false]) await run(b, o);
    expect(b.state).toBe('closed');
  });

  it('does not count client errors (a 404 is an answer)', async () => {
    const b = circuitBreaker({ clock: new VirtualClock(), window: consecutive(2) });
    for (let i = 0; i < 5; i++) {
      await b
        .execute(() => Promise.reject(Object.assign(new Error('gone'), { code: 'ENOENT' })))
        .catch(() => undefined);
    }
    expect(b.state).toBe('closed');
  });

  it('counts exhausted retries by their cause and ignores local rejections', () => {
    const exhausted = keelError('RETRIES_EXHAUSTED', 'gave up', {}, { cause: boom() });
    expect(countsAsFailure(exhausted)).toBe(true);
    expect(countsAsFailure(keelError('RETRIES_EXHAUSTED', 'x', {}, { cause: new Error('plain') }))).toBe(
      false,
    );
    expect(countsAsFailure(keelError('CIRCUIT_OPEN', 'x'))).toBe(false);
    expect(countsAsFailure(keelError('BAD_REQUEST', 'x'))).toBe(false);
  });

  it('goes half-open after halfOpenAfterMs, and one successful probe closes it', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({ clock, window: consecutive(1), halfOpenAfterMs: 1000 });
    const changes: string[] = [];
    b.on('stateChange', (e) => changes.push(`${e.from}->${e.to}`));
    await run(b, false);
    await clock.advance(999);
    expect(await run(b, true)).toBe('rejected');
    await clock.advance(1);
    expect(b.state).toBe('halfOpen');
    expect(await run(b, true)).toBe('ok');
    expect(b.state).toBe('closed');
    expect(changes).toEqual(['closed->open', 'open->halfOpen', 'halfOpen->closed']);
  });

  it('a failed probe re-opens, for longer when the open duration is a backoff', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({
      clock,
      window: consecutive(1),
      halfOpenAfterMs: exponential({ initialMs: 100, multiplier: 2, jitter: 'none' }),
    });
    const opens: number[] = [];
    b.on('open', (e) => opens.push(e.openForMs));
    await run(b, false);
    await clock.advance(100);
    expect(await run(b, false)).toBe('failed');
    expect(b.state).toBe('open');
    await clock.advance(199);
    expect(b.state).toBe('open');
    await clock.advance(1);
    expect(await run(b, true)).toBe('ok');
    await run(b, false);
    expect(opens).toEqual([100, 200, 100]); // closing resets the backoff
  });

  it('admits at most maxProbes concurrent probes, counting them when admitted', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({
      clock,
      window: consecutive(1),
      halfOpenAfterMs: 10,
      maxProbes: 2,
      successesToClose: 3,
    });
    await run(b, false);
    await clock.advance(10);
    const releases: (() => void)[] = [];
    const slow = () => new Promise<string>((resolve) => releases.push(() => resolve('ok')));
    const p1 = b.execute(slow);
    const p2 = b.execute(slow);
    expect(await run(b, true)).toBe('rejected');
    expect(releases.length).toBe(2);
    releases[0]!();
    await p1;
    expect(b.state).toBe('halfOpen');
    const p3 = b.execute(slow);
    releases[1]!();
    releases[2]!();
    await Promise.all([p2, p3]);
    expect(b.state).toBe('closed');
    expect(b.stats().probes).toBe(3);
  });

  it('isolate() holds it open until every holder released', async () => {
    const b = circuitBreaker({ clock: new VirtualClock() });
    const r1 = b.isolate();
    const r2 = b.isolate();
    expect(b.state).toBe('isolated');
    expect(await b.execute(ok).catch((e: unknown) => e)).toMatchObject({ code: 'CIRCUIT_OPEN' });
    r1();
    r1();
    b.reset();
    expect(b.state).toBe('isolated');
    r2();
    expect(b.state).toBe('closed');
    expect(await run(b, true)).toBe('ok');
  });

  it('reset() closes an open breaker', async () => {
    const b = circuitBreaker({ clock: new VirtualClock(), window: consecutive(1) });
    await run(b, false);
    b.reset();
    expect(b.state).toBe('closed');
    expect(await run(b, true)).toBe('ok');
  });

  it('saves and restores its state as plain data', async () => {
    const clock = new VirtualClock();
    const a = circuitBreaker({ clock, window: countWindow({ size: 4, minCalls: 4, failureRate: 0.5 }) });
    await run(a, false);
    await run(a, true);
    const closed = JSON.parse(JSON.stringify(a.toJSON()));
    expect(closed).toEqual({
      state: 'closed',
      reopenCount: 0,
      window: { kind: 'countWindow', outcomes: [1, 0] },
    });
    const b = circuitBreaker({
      clock,
      window: countWindow({ size: 4, minCalls: 4, failureRate: 0.5 }),
      initialState: closed,
    });
    await run(b, true);
    expect(b.state).toBe('closed');
    await run(b, false); // 2 of 4 failed
    expect(b.state).toBe('open');
    const open = JSON.parse(JSON.stringify(b.toJSON()));
    expect(open).toMatchObject({ state: 'open', openUntil: 10_000 });
    const c = circuitBreaker({ clock, initialState: open });
    expect(await run(c, true)).toBe('rejected');
    await clock.advance(10_000);
    expect(await run(c, true)).toBe('ok');
    expect(() => circuitBreaker({ initialState: { ...open, state: 'weird' } })).toThrow(
      /not a breaker state/,
    );
  });

  it("restore() moves a live breaker to another breaker's open state until its openUntil", async () => {
    const clock = new VirtualClock();
    const a = circuitBreaker({ clock, window: consecutive(2), halfOpenAfterMs: 5_000 });
    const b = circuitBreaker({ clock, window: consecutive(2), halfOpenAfterMs: 5_000 });
    const changes: string[] = [];
    const opened: unknown[] = [];
    b.on('stateChange', (e) => changes.push(`${e.from}>${e.to}`));
    b.on('open', (e) => opened.push(e));
    await run(a, false);
    await run(a, false);
    await clock.advance(1_000);
    b.restore(a.toJSON());
    expect(b.state).toBe('open');
    expect(b.toJSON().openUntil).toBe(5_000);
    let calls = 0;
    await expect(b.execute(() => (calls++, ok()))).rejects.toMatchObject({
      code: 'CIRCUIT_OPEN',
      details: { retryAfterMs: 4_000 },
    });
    expect(calls).toBe(0);
    await clock.advance(3_999);
    expect(await run(b, true)).toBe('rejected');
    await clock.advance(1);
    expect(b.state).toBe('halfOpen');
    expect(await run(b, true)).toBe('ok');
    expect(b.state).toBe('closed');
    expect(changes).toEqual(['closed>open', 'open>halfOpen', 'halfOpen>closed']);
    expect(opened).toEqual([]); // restored, not tripped
  });

  it('restore() of a closed state closes an open breaker and clears its window', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({ clock, window: consecutive(2) });
    await run(b, false);
    await run(b, false);
    expect(b.state).toBe('open');
    b.restore({
      state: 'closed',
      reopenCount: 0,
      window: { kind: 'consecutive', failures: 0, slowCalls: 0 },
    });
    expect(b.state).toBe('closed');
    expect(await run(b, false)).toBe('failed'); // one failure of two: still closed
    expect(b.state).toBe('closed');
    expect(await run(b, false)).toBe('failed');
    expect(b.state).toBe('open');
  });

  it('restore() forgets calls admitted before it, but a probe in flight keeps its place', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({ clock, window: consecutive(1), halfOpenAfterMs: 1_000 });
    await run(b, false);
    await clock.advance(1_000);
    expect(b.state).toBe('halfOpen');
    let finishProbe!: () => void;
    const probe = b.execute(() => new Promise<string>((resolve) => (finishProbe = () => resolve('ok'))));
    b.restore({
      state: 'halfOpen',
      reopenCount: 0,
      window: { kind: 'consecutive', failures: 0, slowCalls: 0 },
    });
    expect(await run(b, true)).toBe('rejected'); // the old probe still holds the one place
    finishProbe();
    await probe;
    expect(b.state).toBe('halfOpen'); // its success came from before the restore: not counted
    expect(await run(b, true)).toBe('ok');
    expect(b.state).toBe('closed');
  });

  it('restore() leaves a breaker isolated by hand isolated, and rejects a state that is not one', () => {
    const b = circuitBreaker({ clock: new VirtualClock() });
    const release = b.isolate();
    b.restore({
      state: 'closed',
      reopenCount: 0,
      window: { kind: 'consecutive', failures: 0, slowCalls: 0 },
    });
    expect(b.state).toBe('isolated');
    release();
    expect(b.state).toBe('closed');
    expect(() => b.restore({ state: 'ajar' as 'open', reopenCount: 0, window: b.toJSON().window })).toThrow(
      /not a breaker state/,
    );
  });

  it('restore() without openUntil, or of an isolated state, opens for the next open duration', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({
      clock,
      halfOpenAfterMs: exponential({ initialMs: 100, maxMs: 10_000, jitter: 'none' }),
    });
    b.restore({ state: 'isolated', reopenCount: 2, window: b.toJSON().window });
    expect(b.state).toBe('open');
    expect(b.toJSON()).toMatchObject({ openUntil: 400, reopenCount: 2 });
    await clock.advance(400);
    expect(b.state).toBe('halfOpen');
  });

  it('opens on slow calls when slowCallMs is set', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({
      clock,
      window: countWindow({ size: 4, minCalls: 4 }),
      slowCallMs: 100,
      slowCallRate: 0.5,
    });
    const reasons: string[] = [];
    b.on('open', (e) => reasons.push(e.reason));
    const slowOk = async () => {
      await clock.sleep(150);
      return 'ok';
    };
    for (let i = 0; i < 2; i++) await run(b, true);
    const p1 = b.execute(slowOk);
    await clock.advance(150);
    await p1;
    expect(b.state).toBe('closed');
    const p2 = b.execute(slowOk);
    await clock.advance(150);
    await p2;
    expect(b.state).toBe('open');
    expect(reasons).toEqual(['slowCallRate']);
  });

  it('time window forgets failures older than its length', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({
      clock,
      window: timeWindow({ ms: 1000, buckets: 10, minCalls: 4, failureRate: 0.75 }),
    });
    await run(b, false);
    await run(b, false);
    await clock.advance(1000);
    await run(b, false);
    await run(b, true);
    await run(b, false);
    expect(b.state).toBe('closed'); // 2 of 3 in the window; the first two expired
    await run(b, false);
    expect(b.state).toBe('open'); // 3 of 4
  });

  it('reports time in each state', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({ clock, window: consecutive(1), halfOpenAfterMs: 500 });
    await clock.advance(100);
    await run(b, false);
    await clock.advance(300);
    expect(b.stats().timeInStateMs).toEqual({ closed: 100, open: 300, halfOpen: 0, isolated: 0 });
  });

  it("fast rejections are real KeelErrors, one object per call, carrying the caller's correlation id", async () => {
    const { isKeelError, KeelError, withCorrelation } = await import('../errors/index.js');
    const b = circuitBreaker({ clock: new VirtualClock(), window: consecutive(1), name: 'billing' });
    await run(b, false);
    const e1 = (await b.execute(ok).catch((e: unknown) => e)) as InstanceType<typeof KeelError>;
    const e2 = (await withCorrelation('req-42', () => b.execute(ok)).catch((e: unknown) => e)) as typeof e1;
    expect(isKeelError(e1)).toBe(true);
    expect(e1).toBeInstanceOf(KeelError);
    expect(e1).toBeInstanceOf(Error);
    expect(e1).not.toBe(e2);
    expect(e1.message).toBe(
      'the circuit breaker "billing" is open: calls are rejected without reaching the dependency',
    );
    expect(e2.correlationId).toBe('req-42');
    expect(e1.correlationId).toBeUndefined();
    expect(e1.toJSON()).toMatchObject({
      code: 'CIRCUIT_OPEN',
      httpStatus: 503,
      details: { state: 'open', openUntil: 10_000 },
    });
    expect(e1.toProblem()).toMatchObject({ status: 503, retryAfterSeconds: 10 });
  });

  it('moves to half-open on time without waiting for a call', async () => {
    const clock = new VirtualClock();
    const b = circuitBreaker({ clock, window: consecutive(1), halfOpenAfterMs: 1000 });
    const at: number[] = [];
    b.on('halfOpen', () => at.push(clock.now()));
    await run(b, false);
    await clock.advance(2000);
    expect(at).toEqual([1000]);
    b.reset();
    expect(clock.pendingTimers()).toBe(0);
  });

  it('rejects invalid settings', () => {
    expect(() => consecutive(0)).toThrow(/threshold/);
    expect(() => countWindow({ size: 10, minCalls: 11 })).toThrow(/minCalls/);
    expect(() => timeWindow({ failureRate: 0 })).toThrow(/failureRate/);
    expect(() => circuitBreaker({ maxProbes: 0 })).toThrow(/maxProbes/);
  });
});

describe('circuitBreaker properties', () => {
  it('opens exactly when its window says so (consecutive)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.boolean(), { maxLength: 40, size: 'max' }),
        async (n, outcomes) => {
          const b = circuitBreaker({ clock: new VirtualClock(), window: consecutive(n) });
          let streak = 0;
          let open = false;
          for (const o of outcomes) {
            const r = await run(b, o);
            if (open) expect(r).toBe('rejected');
            else {
              expect(r).toBe(o ? 'ok' : 'failed');
              streak = o ? 0 : streak + 1;
              if (streak >= n) open = true;
            }
            expect(b.state).toBe(open ? 'open' : 'closed');
          }
        },
      ),
    );
  });

  it('opens exactly when its window says so (count window)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 10 }),
        fc.array(fc.boolean(), { maxLength: 40, size: 'max' }),
        async (size, minRaw, rateTenths, outcomes) => {
          const minCalls = Math.min(size, minRaw);
          const failureRate = rateTenths / 10;
          const b = circuitBreaker({
            clock: new VirtualClock(),
            window: countWindow({ size, minCalls, failureRate }),
          });
          const seen: boolean[] = [];
          let open = false;
          for (const o of outcomes) {
            const r = await run(b, o);
            if (open) {
              expect(r).toBe('rejected');
              continue;
            }
            seen.push(o);
            const last = seen.slice(-size);
            const failures = last.filter((x) => !x).length;
            if (last.length >= minCalls && failures >= failureRate * last.length - 1e-9) open = true;
            expect(b.state).toBe(open ? 'open' : 'closed');
          }
        },
      ),
    );
  });

  it('opens exactly when its window says so (time window)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 300 })), { maxLength: 40, size: 'max' }),
        async (steps) => {
          const clock = new VirtualClock();
          const b = circuitBreaker({
            clock,
            window: timeWindow({ ms: 1000, buckets: 5, minCalls: 3, failureRate: 0.5 }),
          });
          const seen: { ok: boolean; bucket: number }[] = [];
          let open = false;
          for (const [o, wait] of steps) {
            await clock.advance(wait);
            const r = await run(b, o);
            if (open) {
              expect(r).toBe('rejected');
              continue;
            }
            const bucket = Math.floor(clock.now() / 200);
            seen.push({ ok: o, bucket });
            const live = seen.filter((s) => s.bucket > bucket - 5);
            const failures = live.filter((s) => !s.ok).length;
            if (live.length >= 3 && failures >= 0.5 * live.length - 1e-9) open = true;
            expect(b.state).toBe(open ? 'open' : 'closed');
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('never calls the function while open and never runs more concurrent probes than allowed', async () => {
    type Cmd = { t: 'start' } | { t: 'settle'; index: number; ok: boolean } | { t: 'advance'; ms: number };
    const cmd = fc.oneof(
      fc.constant<Cmd>({ t: 'start' }),
      fc.record({ t: fc.constant('settle' as const), index: fc.nat(), ok: fc.boolean() }),
      fc.record({ t: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 400 }) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(cmd, { minLength: 20, maxLength: 80, size: 'max' }),
        async (maxProbes, cmds) => {
          const clock = new VirtualClock();
          const b = circuitBreaker({
            clock,
            window: consecutive(2),
            halfOpenAfterMs: 300,
            maxProbes,
            successesToClose: 2,
          });
          // An independent model of when the breaker may call the function, fed by its open/close events.
          let openUntil = -Infinity;
          let closed = true;
          b.on('open', (e) => {
            openUntil = clock.now() + e.openForMs;
            closed = false;
          });
          b.on('close', () => (closed = true));
          const violations: string[] = [];
          const pending: { settle: (ok: boolean) => void; done: Promise<unknown> }[] = [];
          let probesRunning = 0;
          for (const c of cmds) {
            if (c.t === 'advance') await clock.advance(c.ms);
            else if (c.t === 'start') {
              let entry: (typeof pending)[number] | undefined;
              const done = b
                .execute(
                  () =>
                    new Promise<string>((resolve, reject) => {
                      if (!closed && clock.now() < openUntil)
                        violations.push(`called while open at ${clock.now()}`);
                      const probe = !closed;
                      if (probe) probesRunning++;
                      if (probesRunning > maxProbes) violations.push(`${probesRunning} probes at once`);
                      entry = {
                        settle: (okay) => {
                          if (probe) probesRunning--;
                          if (okay) resolve('ok');
                          else reject(boom());
                        },
                        done: Promise.resolve(),
                      };
                    }),
                )
                .catch(() => undefined);
              if (entry) {
                entry.done = done;
                pending.push(entry);
              }
            } else if (pending.length > 0) {
              const [p] = pending.splice(c.index % pending.length, 1);
              p!.settle(c.ok);
              await p!.done;
            }
          }
          expect(violations).toEqual([]);
          for (const p of pending) p.settle(true);
        },
      ),
      { numRuns: 150 },
    );
  });
});
