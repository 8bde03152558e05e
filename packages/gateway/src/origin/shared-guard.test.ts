import { EventEmitter } from 'node:events';
import type { Worker } from 'node:cluster';
import { Readable } from 'node:stream';
import { VirtualClock } from 'keel';
import { afterEach, describe, expect, it } from 'vitest';
import { ClusterCoordination } from '../coord/cluster-coordination.js';
import { ClusterCoordinator } from '../coord/cluster-coordinator.js';
import type { OriginResponse } from './origin-client.js';
import { OriginGuard } from './origin-guard.js';
import { shareOriginGuard } from './shared-guard.js';

/**
 * One host's coordination in one process: the primary's ClusterCoordination and a worker's
 * ClusterCoordinator per guard, joined by an in-memory channel that delivers messages in order,
 * copied, on later turns of the event loop (as node:cluster's IPC does).
 */
class Host {
  readonly primary = new ClusterCoordination();
  private readonly stops: (() => void)[] = [];
  private nextId = 1;

  join(guard: OriginGuard, clock: VirtualClock): { coord: ClusterCoordinator; worker: Worker } {
    const toWorker = new Set<(m: unknown) => void>();
    const fake = Object.assign(new EventEmitter(), {
      id: this.nextId++,
      connected: true,
      isConnected(): boolean {
        return this.connected;
      },
      send(m: unknown): boolean {
        setImmediate(() => {
          for (const l of toWorker) l(structuredClone(m));
        });
        return true;
      },
    });
    const worker = fake as unknown as Worker;
    const coord = new ClusterCoordinator(
      (m) => {
        if (fake.connected) setImmediate(() => fake.emit('message', structuredClone(m)));
      },
      (listener) => {
        toWorker.add(listener);
        return () => toWorker.delete(listener);
      },
    );
    this.primary.add(worker);
    this.stops.push(shareOriginGuard(guard, coord, { clock }));
    return { coord, worker };
  }

  /** The worker's process died: nothing more from it, the primary lets go of it. */
  kill(worker: Worker): void {
    (worker as unknown as { connected: boolean }).connected = false;
    this.primary.remove(worker);
  }

  stop(): void {
    for (const s of this.stops) s();
  }
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};

const answer = (status: number): OriginResponse => ({ status, headers: {}, body: Readable.from([]) });

function guardOf(clock: VirtualClock, maxBuckets = 1_000): OriginGuard {
  return new OriginGuard({
    clock,
    breakerFailures: 2,
    breakerHalfOpenAfterMs: 1_000,
    retryAttempts: 1,
    maxBuckets,
  });
}

/** An origin whose answers the test gives one at a time, counting the requests it was sent. */
class ScriptedOrigin {
  calls = 0;
  private readonly waiting: ((res: OriginResponse) => void)[] = [];
  readonly fn = (): Promise<OriginResponse> => {
    this.calls++;
    return new Promise((resolve) => this.waiting.push(resolve));
  };

  answer(status: number): void {
    this.waiting.shift()?.(answer(status));
  }
}

async function outcome(p: Promise<OriginResponse>): Promise<string> {
  try {
    return String((await p).status);
  } catch (e) {
    return (e as { code?: string }).code === 'CIRCUIT_OPEN' ? 'CIRCUIT_OPEN' : 'failed';
  }
}

let host: Host | undefined;
afterEach(() => {
  host?.stop();
  host = undefined;
});

describe('origin guards shared between workers', () => {
  it('a breaker opened in one worker rejects in the other without calling, until the same openUntil', async () => {
    const clock = new VirtualClock();
    const a = guardOf(clock);
    const b = guardOf(clock);
    host = new Host();
    host.join(a, clock);
    host.join(b, clock);
    expect(await outcome(a.call('photos', () => Promise.resolve(answer(200))))).toBe('200'); // confirms photos in a
    for (let i = 0; i < 2; i++)
      expect(await outcome(a.call('photos', () => Promise.resolve(answer(500))))).toBe('failed');
    expect(a.breakerOf('photos').state).toBe('open');
    await settle();
    expect(b.breakerStates()).toMatchObject({ photos: 'open' }); // b never saw the bucket: given a breaker
    expect(b.breakerOf('photos').toJSON().openUntil).toBe(a.breakerOf('photos').toJSON().openUntil);
    let calls = 0;
    const rejected = await outcome(b.call('photos', () => (calls++, Promise.resolve(answer(200)))));
    expect(rejected).toBe('CIRCUIT_OPEN');
    expect(calls).toBe(0);
    await clock.advance(999);
    expect(b.breakerOf('photos').state).toBe('open');
    await clock.advance(1);
    expect(b.breakerOf('photos').state).toBe('halfOpen');
    expect(a.breakerOf('photos').state).toBe('halfOpen');
  });

  it('admits one half-open probe across workers; its success closes the breaker in both', async () => {
    const clock = new VirtualClock();
    const a = guardOf(clock);
    const b = guardOf(clock);
    host = new Host();
    host.join(a, clock);
    host.join(b, clock);
    for (let i = 0; i < 2; i++) await outcome(a.call('', () => Promise.resolve(answer(503))));
    await settle();
    expect(b.breakerOf('').state).toBe('open');
    await clock.advance(1_000);
    const origin = new ScriptedOrigin();
    // b probes first: a, which opened it with its own failures, is closed by b's probe.
    const calls = [b, a, b, a].map((g) => outcome(g.call('', origin.fn)));
    await settle();
    expect(origin.calls).toBe(1);
    origin.answer(200);
    const outcomes = await Promise.all(calls);
    expect(outcomes.filter((o) => o === '200')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'CIRCUIT_OPEN')).toHaveLength(3);
    await settle();
    expect(a.breakerOf('').state).toBe('closed');
    expect(b.breakerOf('').state).toBe('closed');
    expect(await outcome(b.call('', () => Promise.resolve(answer(200))))).toBe('200');
    // Closed with a clean count in both: one failure (of two that open it) leaves each closed.
    for (const g of [a, b]) {
      expect(await outcome(g.call('', () => Promise.resolve(answer(500))))).toBe('failed');
      expect(g.breakerOf('').state).toBe('closed');
    }
  });

  it('a failed probe opens the breaker again in every worker, and the next probe is one at a time again', async () => {
    const clock = new VirtualClock();
    const a = guardOf(clock);
    const b = guardOf(clock);
    host = new Host();
    host.join(a, clock);
    host.join(b, clock);
    for (let i = 0; i < 2; i++) await outcome(b.call('', () => Promise.resolve(answer(500))));
    await settle();
    await clock.advance(1_000);
    const origin = new ScriptedOrigin();
    const first = [outcome(a.call('', origin.fn)), outcome(b.call('', origin.fn))];
    await settle();
    expect(origin.calls).toBe(1);
    origin.answer(500);
    expect((await Promise.all(first)).sort()).toEqual(['CIRCUIT_OPEN', 'failed']);
    await settle();
    expect(a.breakerOf('').state).toBe('open');
    expect(b.breakerOf('').state).toBe('open');
    await clock.advance(1_000);
    const second = [outcome(b.call('', origin.fn)), outcome(a.call('', origin.fn))];
    await settle();
    expect(origin.calls).toBe(2);
    origin.answer(200);
    expect((await Promise.all(second)).sort()).toEqual(['200', 'CIRCUIT_OPEN']);
  });

  it('a worker that dies while probing lets another worker probe', async () => {
    const clock = new VirtualClock();
    const a = guardOf(clock);
    const b = guardOf(clock);
    host = new Host();
    const { worker: wa } = host.join(a, clock);
    host.join(b, clock);
    for (let i = 0; i < 2; i++) await outcome(a.call('', () => Promise.resolve(answer(500))));
    await settle();
    await clock.advance(1_000);
    const origin = new ScriptedOrigin();
    void outcome(a.call('', origin.fn)); // a probes, then dies before its answer
    await settle();
    expect(origin.calls).toBe(1);
    expect(await outcome(b.call('', origin.fn))).toBe('CIRCUIT_OPEN');
    host.kill(wa);
    const probe = outcome(b.call('', origin.fn));
    await settle();
    expect(origin.calls).toBe(2);
    origin.answer(200); // a's request (its process is gone) …
    origin.answer(200); // … and b's probe
    expect(await probe).toBe('200');
    expect(b.breakerOf('').state).toBe('closed');
  });

  it('remote open states for buckets unknown here keep at most maxBuckets breakers; closed ones keep none', async () => {
    const clock = new VirtualClock();
    const a = guardOf(clock);
    const b = guardOf(clock, 3);
    host = new Host();
    const { coord } = host.join(a, clock);
    host.join(b, clock);
    for (let i = 0; i < 10; i++) coord.publishBreaker(`closed-${i}`, { state: 'closed' });
    await settle();
    expect(Object.keys(b.breakerStates())).toEqual([]);
    for (let i = 0; i < 10; i++)
      coord.publishBreaker(`bucket-${i}`, { state: 'open', openUntil: clock.now() + 5_000 });
    coord.publishBreaker('x'.repeat(300), { state: 'open', openUntil: clock.now() + 5_000 });
    await settle();
    expect(b.breakerStates()).toEqual({ 'bucket-7': 'open', 'bucket-8': 'open', 'bucket-9': 'open' });
  });

  it("shares the retry budget: what one worker's retries spend, the other cannot spend again", async () => {
    const clock = new VirtualClock();
    const a = guardOf(clock);
    const b = guardOf(clock);
    host = new Host();
    host.join(a, clock);
    host.join(b, clock);
    const full = b.budget.stats().tokens;
    let spent = 0;
    while (a.budget.tryWithdraw()) spent++;
    expect(spent).toBe(full / 5);
    await clock.advance(100); // the publishing period (and 5 tokens of time refill in each copy)
    await settle();
    expect(b.budget.stats().tokens).toBeCloseTo(a.budget.stats().tokens, 9);
    expect(b.budget.tryWithdraw()).toBe(true); // the refill's one retry …
    expect(b.budget.tryWithdraw()).toBe(false); // … and no more
  });
});
