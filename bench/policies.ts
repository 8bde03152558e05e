/**
 * Policies benchmark: keel against a bare await, cockatiel and opossum, in one process.
 *   node --expose-gc --import tsx bench/policies.ts
 * Writes bench/results/policies.json (medians of several rounds, ns per call, ratios).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as cockatiel from 'cockatiel';
import Opossum from 'opossum';
import {
  circuitBreaker,
  consecutive,
  countWindow,
  keyed,
  pipeline,
  retry,
  timeout,
  timeWindow,
  type CircuitBreakerPolicy,
  type WindowSpec,
  VirtualClock,
} from 'keel';

const ROUNDS = Number(process.env.ROUNDS ?? 9);
const HOT_ITERATIONS = Number(process.env.HOT_ITERATIONS ?? 200_000);
const REJECT_ITERATIONS = Number(process.env.REJECT_ITERATIONS ?? 50_000);

type Case = () => Promise<unknown>;

async function timeLoop(run: Case, iterations: number): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) await run();
  return Number(process.hrtime.bigint() - start) / iterations;
}

async function timeRejections(run: Case, iterations: number): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    try {
      await run();
    } catch {
      // expected: the breaker is open
    }
  }
  return Number(process.hrtime.bigint() - start) / iterations;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Runs every case once per round, interleaved, after one warm-up round; returns median ns per call. */
async function measure(
  cases: Record<string, Case>,
  iterations: number,
  loop: (run: Case, n: number) => Promise<number>,
): Promise<Record<string, number>> {
  const samples: Record<string, number[]> = {};
  for (const name of Object.keys(cases)) samples[name] = [];
  for (let round = -1; round < ROUNDS; round++) {
    for (const [name, run] of Object.entries(cases)) {
      const ns = await loop(run, round < 0 ? Math.min(iterations, 50_000) : iterations);
      if (round >= 0) samples[name]!.push(ns);
    }
  }
  const out: Record<string, number> = {};
  for (const [name, xs] of Object.entries(samples)) out[name] = Math.round(median(xs) * 10) / 10;
  return out;
}

const round2 = (x: number): number => Math.round(x * 100) / 100;

// ---------------------------------------------------------------------------------------------
// 1. Hot path: nothing fails.
const work = async (): Promise<number> => 1;

const keelRetry = retry();
const keelBreaker = circuitBreaker();
const keelTimeout = timeout(10_000);
const keelAggressive = timeout(10_000, { strategy: 'aggressive' });
const keelPipeline = pipeline(timeout(10_000), retry(), circuitBreaker());

const cRetry = cockatiel.retry(cockatiel.handleAll, {
  maxAttempts: 3,
  backoff: new cockatiel.ExponentialBackoff(),
});
const cBreaker = cockatiel.circuitBreaker(cockatiel.handleAll, {
  halfOpenAfter: 10_000,
  breaker: new cockatiel.ConsecutiveBreaker(5),
});
const cTimeout = cockatiel.timeout(10_000, cockatiel.TimeoutStrategy.Cooperative);
const cWrap = cockatiel.wrap(
  cockatiel.retry(cockatiel.handleAll, { maxAttempts: 3, backoff: new cockatiel.ExponentialBackoff() }),
  cockatiel.circuitBreaker(cockatiel.handleAll, {
    halfOpenAfter: 10_000,
    breaker: new cockatiel.ConsecutiveBreaker(5),
  }),
  cockatiel.timeout(10_000, cockatiel.TimeoutStrategy.Cooperative),
);

const oBreaker = new Opossum(work, { timeout: false, resetTimeout: 10_000 });
const oBreakerTimeout = new Opossum(work, { timeout: 10_000, resetTimeout: 10_000 });

console.log(`hot path: ${ROUNDS} rounds × ${HOT_ITERATIONS} calls …`);
const hot = await measure(
  {
    bare: () => work(),
    'keel.retry': () => keelRetry.execute(work),
    'keel.breaker': () => keelBreaker.execute(work),
    'keel.timeout': () => keelTimeout.execute(work),
    'keel.timeout.aggressive': () => keelAggressive.execute(work),
    'keel.pipeline(timeout,retry,breaker)': () => keelPipeline.execute(work),
    'cockatiel.retry': () => cRetry.execute(work),
    'cockatiel.breaker': () => cBreaker.execute(work),
    'cockatiel.timeout': () => cTimeout.execute(work),
    'cockatiel.wrap(retry,breaker,timeout)': () => cWrap.execute(work),
    'opossum.breaker': () => oBreaker.fire(),
    'opossum.breaker+timeout': () => oBreakerTimeout.fire(),
  },
  HOT_ITERATIONS,
  timeLoop,
);
const bare = hot.bare as number;
const pipelineNs = hot['keel.pipeline(timeout,retry,breaker)'] as number;
const hotRatios = {
  'keel.pipeline / bare': round2(pipelineNs / bare),
  'cockatiel.wrap / keel.pipeline': round2(
    (hot['cockatiel.wrap(retry,breaker,timeout)'] as number) / pipelineNs,
  ),
  'cockatiel.wrap / bare': round2((hot['cockatiel.wrap(retry,breaker,timeout)'] as number) / bare),
  'keel.retry / bare': round2((hot['keel.retry'] as number) / bare),
  'keel.breaker / bare': round2((hot['keel.breaker'] as number) / bare),
  'keel.timeout / bare': round2((hot['keel.timeout'] as number) / bare),
  'cockatiel.breaker / keel.breaker': round2(
    (hot['cockatiel.breaker'] as number) / (hot['keel.breaker'] as number),
  ),
  'opossum.breaker / keel.breaker': round2(
    (hot['opossum.breaker'] as number) / (hot['keel.breaker'] as number),
  ),
  'cockatiel.timeout / keel.timeout': round2(
    (hot['cockatiel.timeout'] as number) / (hot['keel.timeout'] as number),
  ),
};
console.log(hot, hotRatios);

// ---------------------------------------------------------------------------------------------
// 2. Rejection by an open breaker.
const failing = async (): Promise<never> => {
  throw Object.assign(new Error('reset'), { code: 'ECONNRESET' });
};
const keelOpen = circuitBreaker({ window: consecutive(1), halfOpenAfterMs: 3_600_000 });
await keelOpen.execute(failing).catch(() => undefined);
const cOpen = cockatiel.circuitBreaker(cockatiel.handleAll, {
  halfOpenAfter: 3_600_000,
  breaker: new cockatiel.ConsecutiveBreaker(1),
});
await cOpen.execute(failing).catch(() => undefined);
const keelOpenInPipeline = circuitBreaker({ window: consecutive(1), halfOpenAfterMs: 3_600_000 });
await keelOpenInPipeline.execute(failing).catch(() => undefined);
const keelOpenPipeline = pipeline(timeout(10_000), retry(), keelOpenInPipeline);
const cOpenInWrap = cockatiel.circuitBreaker(cockatiel.handleAll, {
  halfOpenAfter: 3_600_000,
  breaker: new cockatiel.ConsecutiveBreaker(1),
});
await cOpenInWrap.execute(failing).catch(() => undefined);
const cOpenWrap = cockatiel.wrap(
  cockatiel.retry(
    cockatiel.handleWhen((e) => !(e instanceof cockatiel.BrokenCircuitError)),
    {
      maxAttempts: 3,
      backoff: new cockatiel.ExponentialBackoff(),
    },
  ),
  cOpenInWrap,
  cockatiel.timeout(10_000, cockatiel.TimeoutStrategy.Cooperative),
);
const oOpen = new Opossum(work, { timeout: false, resetTimeout: 3_600_000 });
oOpen.open();
if (keelOpen.state !== 'open' || cOpen.state !== cockatiel.CircuitState.Open || !oOpen.opened) {
  throw new Error('benchmark setup: a breaker did not open');
}
console.log(`open-breaker rejection: ${ROUNDS} rounds × ${REJECT_ITERATIONS} calls …`);
const rejection = await measure(
  {
    keel: () => keelOpen.execute(work),
    cockatiel: () => cOpen.execute(work),
    opossum: () => oOpen.fire(),
    'keel.pipeline(timeout,retry,breaker)': () => keelOpenPipeline.execute(work),
    'cockatiel.wrap(retry,breaker,timeout)': () => cOpenWrap.execute(work),
  },
  REJECT_ITERATIONS,
  timeRejections,
);
const rejectionRatios = {
  'cockatiel / keel': round2((rejection.cockatiel as number) / (rejection.keel as number)),
  'opossum / keel': round2((rejection.opossum as number) / (rejection.keel as number)),
  'cockatiel.wrap / keel.pipeline': round2(
    (rejection['cockatiel.wrap(retry,breaker,timeout)'] as number) /
      (rejection['keel.pipeline(timeout,retry,breaker)'] as number),
  ),
};
console.log(rejection, rejectionRatios);

// ---------------------------------------------------------------------------------------------
// 3. Memory.
const gc = (globalThis as { gc?: () => void }).gc;
function heapUsed(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

function bytesPer(count: number, make: (i: number) => unknown): number {
  const keep: unknown[] = new Array<unknown>(count);
  const before = heapUsed();
  for (let i = 0; i < count; i++) keep[i] = make(i);
  const after = heapUsed();
  const per = (after - before) / count;
  keep.length = 0;
  return Math.round(per);
}

const windows: Record<string, () => WindowSpec> = {
  consecutive: () => consecutive(5),
  'countWindow(size 100)': () => countWindow({ size: 100 }),
  'timeWindow(10 buckets)': () => timeWindow({ ms: 10_000, buckets: 10 }),
};
const memory: Record<string, number | string> = {};
if (gc === undefined) memory.note = 'run with --expose-gc for stable figures';
const specs = Object.fromEntries(Object.entries(windows).map(([k, f]) => [k, f()]));
for (const [name, spec] of Object.entries(specs)) {
  memory[`keel breaker, ${name} (bytes each)`] = bytesPer(10_000, () => circuitBreaker({ window: spec }));
}
memory['keel retry (bytes each)'] = bytesPer(10_000, () => retry());
memory['keel timeout (bytes each)'] = bytesPer(10_000, () => timeout(1000));
memory['cockatiel breaker, ConsecutiveBreaker (bytes each)'] = bytesPer(10_000, () =>
  cockatiel.circuitBreaker(cockatiel.handleAll, {
    halfOpenAfter: 10_000,
    breaker: new cockatiel.ConsecutiveBreaker(5),
  }),
);
{
  const made: Opossum[] = [];
  memory['opossum breaker (bytes each)'] = bytesPer(2_000, () => {
    const b = new Opossum(work, { timeout: false });
    made.push(b);
    return b;
  });
  for (const b of made) b.shutdown();
}
{
  const registry = keyed((_key: string) => circuitBreaker(), { maxKeys: 200_000 });
  const before = heapUsed();
  for (let i = 0; i < 100_000; i++) registry.get(`host-${i}`);
  const after = heapUsed();
  memory['keyed registry, 100,000 breakers (MiB)'] = Math.round(((after - before) / 1024 / 1024) * 10) / 10;
  memory['keyed registry, bytes per key'] = Math.round((after - before) / 100_000);
  if (registry.size !== 100_000) throw new Error('keyed registry lost keys');
}
console.log(memory);

// ---------------------------------------------------------------------------------------------
// 4. Reaction, on a VirtualClock: a dependency fails from t = 0 and recovers later; one call
//    every 10 ms. How many calls reach it before the breaker opens, and how long after it
//    recovers until a probe closes the breaker?
async function reaction(
  make: (clock: VirtualClock) => CircuitBreakerPolicy,
): Promise<Record<string, number>> {
  const clock = new VirtualClock();
  const breaker = make(clock);
  let healthy = false;
  let reached = 0;
  const dependency = async (): Promise<string> => {
    if (healthy) return 'ok';
    reached++;
    throw Object.assign(new Error('unavailable'), { code: 'ECONNREFUSED' });
  };
  let openedAt = -1;
  breaker.on('open', () => {
    if (openedAt < 0) openedAt = clock.now();
  });
  while (openedAt < 0 && clock.now() < 600_000) {
    await breaker.execute(dependency).catch(() => undefined);
    await clock.advance(10);
  }
  const callsBeforeOpen = reached;
  await clock.advance(1_000);
  healthy = true;
  const recoveredAt = clock.now();
  let closedAt = -1;
  breaker.on('close', () => (closedAt = clock.now()));
  while (closedAt < 0 && clock.now() < recoveredAt + 600_000) {
    await breaker.execute(dependency).catch(() => undefined);
    await clock.advance(10);
  }
  return {
    callsReachingFailingDependencyBeforeOpen: callsBeforeOpen,
    msToOpen: openedAt,
    msFromRecoveryToClose: closedAt - recoveredAt,
  };
}
const reactions = {
  'consecutive(5), halfOpenAfterMs 10 s': await reaction((clock) => circuitBreaker({ clock })),
  'countWindow({ size: 100, failureRate: 0.5 }), 10 s': await reaction((clock) =>
    circuitBreaker({ clock, window: countWindow({ size: 100, failureRate: 0.5 }) }),
  ),
  'countWindow({ size: 100, minCalls: 10 }), 10 s': await reaction((clock) =>
    circuitBreaker({ clock, window: countWindow({ size: 100, failureRate: 0.5, minCalls: 10 }) }),
  ),
  'timeWindow({ ms: 10 s, minCalls: 10 }), 10 s': await reaction((clock) =>
    circuitBreaker({ clock, window: timeWindow({ ms: 10_000, minCalls: 10 }) }),
  ),
  'consecutive(5), halfOpenAfterMs 1 s': await reaction((clock) =>
    circuitBreaker({ clock, halfOpenAfterMs: 1000 }),
  ),
};
console.log(reactions);

oBreaker.shutdown();
oBreakerTimeout.shutdown();
oOpen.shutdown();

const targets = {
  'pipeline <= 4x bare': pipelineNs <= 4 * bare,
  'pipeline >= 20x faster than cockatiel wrap': (hotRatios['cockatiel.wrap / keel.pipeline'] ?? 0) >= 20,
  'open rejection <= 500 ns': (rejection.keel as number) <= 500,
  'open rejection >= 10x faster than cockatiel': rejectionRatios['cockatiel / keel'] >= 10,
  'open rejection >= 10x faster than opossum': rejectionRatios['opossum / keel'] >= 10,
};
const result = {
  date: new Date().toISOString(),
  node: process.version,
  cpus: (await import('node:os')).cpus().length,
  rounds: ROUNDS,
  hotPath: { iterations: HOT_ITERATIONS, nsPerCall: hot, ratios: hotRatios },
  openBreakerRejection: { iterations: REJECT_ITERATIONS, nsPerCall: rejection, ratios: rejectionRatios },
  memory,
  reaction: {
    note:
      'VirtualClock; the dependency fails from t = 0 and recovers 1 s after the breaker opened; one call every 10 ms. ' +
      'msFromRecoveryToClose = the rest of the open period (halfOpenAfterMs - 1 s) plus one call interval at most.',
    ...reactions,
  },
  targets,
};
const dir = path.join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(path.join(dir, 'policies.json'), JSON.stringify(result, null, 2) + '\n');
console.log(targets);
console.log(`wrote ${path.join(dir, 'policies.json')}`);
