/** `keel` as installed: the error model, clocks and policies, with the types users see. */
import assert from 'node:assert/strict';
import {
  circuitBreaker,
  classify,
  consecutive,
  fallback,
  keyed,
  pipeline,
  retry,
  timeout,
  VirtualClock,
  type KeelError,
} from 'keel';

// The expression: typed exactly number (a `number | undefined` would not compile here).
const n: number = await pipeline(
  timeout(1000),
  retry({ maxAttempts: 3 }),
  circuitBreaker({ window: consecutive(5) }),
).execute(async () => 42);
assert.equal(n, 42);

const withFallback: number | 'stale' = await pipeline(
  fallback('stale' as const),
  retry({ maxAttempts: 1 }),
).execute(() => Promise.reject(Object.assign(new Error('reset'), { code: 'ECONNRESET' })));
assert.equal(withFallback, 'stale');

const e: KeelError = classify(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
assert.equal(e.code, 'NETWORK_RESET');
assert.equal(e.retryable, true);

const clock = new VirtualClock();
const slow = timeout({ ms: 100, clock, strategy: 'aggressive' }).execute(
  () => new Promise<never>(() => undefined),
);
const outcome = slow.catch((err: unknown) => classify(err).code);
await clock.advance(150);
assert.equal(await outcome, 'TIMEOUT');

const breakers = keyed((host: string) => circuitBreaker({ name: host }), { maxKeys: 2 });
const hosts: number = await breakers.execute('a.example', async () => 1);
assert.equal(hosts, 1);
console.log('keel: ok');
