/**
 * What TypeScript infers from keel's policies, checked by vitest's typecheck mode (tsc, under the
 * plain `strict` settings of test/types/tsconfig.json that users have) and by `npm run typecheck`
 * (under the repository's stricter settings).
 */
import {
  bulkhead,
  circuitBreaker,
  consecutive,
  fallback,
  hedge,
  keyed,
  pipeline,
  retry,
  timeout,
  type BreakerState,
  type GiveUpReason,
  type KeelError,
  type OpenReason,
  type RejectionReason,
} from 'keel';
import { describe, expectTypeOf, test } from 'vitest';

const answer = async (): Promise<number> => 42;

describe('pipeline results', () => {
  test('a pipeline without a fallback gives exactly the function type', () => {
    const p = pipeline(timeout(1000), retry({ maxAttempts: 3 }), circuitBreaker({ window: consecutive(5) }));
    expectTypeOf(p.execute(answer)).resolves.toEqualTypeOf<number>();
  });

  test('each policy alone gives exactly the function type', () => {
    expectTypeOf(timeout(1000).execute(answer)).resolves.toEqualTypeOf<number>();
    expectTypeOf(retry().execute(answer)).resolves.toEqualTypeOf<number>();
    expectTypeOf(circuitBreaker().execute(answer)).resolves.toEqualTypeOf<number>();
    expectTypeOf(bulkhead().execute(answer)).resolves.toEqualTypeOf<number>();
    expectTypeOf(hedge().execute(answer)).resolves.toEqualTypeOf<number>();
  });

  test('a function returning a plain value gives that value type', () => {
    const p = pipeline(retry(), circuitBreaker());
    expectTypeOf(p.execute(() => 'text')).resolves.toEqualTypeOf<string>();
  });

  test('an empty pipeline gives exactly the function type', () => {
    expectTypeOf(pipeline().execute(answer)).resolves.toEqualTypeOf<number>();
  });

  test('a fallback widens the result by its value type', () => {
    const p = pipeline(fallback('stale' as const), timeout(1000), retry());
    expectTypeOf(p.execute(answer)).resolves.toEqualTypeOf<number | 'stale'>();
  });

  test('several fallbacks widen the result by each of their value types', () => {
    const p = pipeline(
      fallback(null),
      retry(),
      fallback((error: KeelError) => error.code),
    );
    expectTypeOf(p.execute(answer)).resolves.toEqualTypeOf<number | null | string>();
  });

  test('a fallback whose value is undefined keeps undefined in the result', () => {
    const p = pipeline(fallback(undefined), retry());
    expectTypeOf(p.execute(answer)).resolves.toEqualTypeOf<number | undefined>();
  });

  test('a nested pipeline without a fallback gives exactly the function type', () => {
    const inner = pipeline(circuitBreaker(), timeout(100));
    const outer = pipeline(timeout(1000), retry(), inner);
    expectTypeOf(outer.execute(answer)).resolves.toEqualTypeOf<number>();
    expectTypeOf(pipeline(pipeline(pipeline(retry()))).execute(answer)).resolves.toEqualTypeOf<number>();
  });

  test("a nested pipeline's fallback widens the outer pipeline's result", () => {
    const inner = pipeline(fallback(0n), circuitBreaker());
    const outer = pipeline(timeout(1000), inner, fallback(false));
    expectTypeOf(outer.execute(answer)).resolves.toEqualTypeOf<number | bigint | boolean>();
  });
});

describe('fallback', () => {
  test('alone, gives the function type or the value type', () => {
    expectTypeOf(fallback('none').execute(answer)).resolves.toEqualTypeOf<number | string>();
  });

  test('a function source receives the classified error and may answer asynchronously', () => {
    const f = fallback(async (error) => {
      expectTypeOf(error).toEqualTypeOf<KeelError>();
      return [error.code];
    });
    expectTypeOf(f.execute(answer)).resolves.toEqualTypeOf<number | string[]>();
  });

  test('shouldHandle receives the classified error', () => {
    fallback(0, {
      shouldHandle: (error) => {
        expectTypeOf(error).toEqualTypeOf<KeelError>();
        return error.retryable;
      },
    });
  });
});

describe('keyed registries', () => {
  test('execute gives exactly the function type for policies without a fallback', () => {
    const breakers = keyed((host: string) => circuitBreaker({ name: host }));
    expectTypeOf(breakers.execute('a.example', answer)).resolves.toEqualTypeOf<number>();
    const pipelines = keyed((host: string) => pipeline(retry(), circuitBreaker({ name: host })));
    expectTypeOf(pipelines.execute('a.example', answer)).resolves.toEqualTypeOf<number>();
  });

  test("execute widens the result by the policies' fallback values", () => {
    const stale = keyed((key: string) => pipeline(fallback(key), retry()));
    expectTypeOf(stale.execute('k', answer)).resolves.toEqualTypeOf<number | string>();
  });

  test('keys and policies keep their types', () => {
    const breakers = keyed((port: number) => circuitBreaker({ name: String(port) }));
    expectTypeOf(breakers.get(80).state).toEqualTypeOf<BreakerState>();
    expectTypeOf(breakers.entries()).toEqualTypeOf<[number, ReturnType<typeof circuitBreaker>][]>();
    // @ts-expect-error the keys are numbers
    breakers.get('80');
  });
});

describe('events', () => {
  test('listeners receive the payload of their event, and registration returns a dispose function', () => {
    const r = retry();
    const dispose = r.on('retry', (e) => {
      expectTypeOf(e).toEqualTypeOf<{ attempt: number; delayMs: number; error: unknown }>();
    });
    expectTypeOf(dispose).toEqualTypeOf<() => void>();
    r.on('giveUp', (e) => expectTypeOf(e.reason).toEqualTypeOf<GiveUpReason>());
  });

  test("a breaker's events carry its states and reasons", () => {
    const b = circuitBreaker();
    b.on('stateChange', (e) => expectTypeOf(e).toEqualTypeOf<{ from: BreakerState; to: BreakerState }>());
    b.on('open', (e) => expectTypeOf(e.reason).toEqualTypeOf<OpenReason>());
    b.on('rejected', (e) => {
      expectTypeOf(e.reason).toEqualTypeOf<RejectionReason>();
      expectTypeOf(e.error).toEqualTypeOf<KeelError>();
    });
  });

  test("every policy has the common events, and each policy's own events", () => {
    timeout(10).on('timeout', (e) => expectTypeOf(e).toEqualTypeOf<{ afterMs: number }>());
    fallback(0).on('fallback', (e) => expectTypeOf(e).toEqualTypeOf<{ error: unknown }>());
    hedge().on('hedge', (e) => expectTypeOf(e).toEqualTypeOf<{ attempt: number }>());
    bulkhead().on('success', (e) => expectTypeOf(e.durationMs).toEqualTypeOf<number | undefined>());
    pipeline(retry()).on('failure', (e) => expectTypeOf(e.error).toEqualTypeOf<unknown>());
  });

  test('an event a policy does not have is refused', () => {
    // @ts-expect-error a timeout has no retry event
    timeout(10).on('retry', () => undefined);
    // @ts-expect-error a pipeline's own events are the common ones only
    pipeline(retry()).on('retry', () => undefined);
    // @ts-expect-error the payload of `timeout` has no `attempt`
    timeout(10).on('timeout', (e: { attempt: number }) => e.attempt);
  });
});

describe('timeout', () => {
  test('takes the time in milliseconds, alone or with options, or one options object with ms', () => {
    expectTypeOf(timeout(1000)).toEqualTypeOf(timeout(1000, { strategy: 'aggressive' }));
    expectTypeOf(timeout({ ms: 1000 })).toEqualTypeOf(timeout(1000));
    expectTypeOf(
      timeout({ ms: 1000, strategy: 'aggressive', name: 'report' }).execute(answer),
    ).resolves.toEqualTypeOf<number>();
    // @ts-expect-error an options object needs ms
    timeout({ strategy: 'aggressive' });
    // @ts-expect-error ms goes in one place only
    timeout(1000, { ms: 1000 });
  });
});
