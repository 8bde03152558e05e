/** What TypeScript accepts as a transfer's policy: any policy or pipeline, but not a fallback. */
import { circuitBreaker, fallback, pipeline, retry, retryBudget, timeout } from 'keel';
import { resumingGet, type RangeRequest, type TransferPolicy } from '@keel/transfer';
import { describe, expectTypeOf, test } from 'vitest';

declare const request: RangeRequest;

describe('TransferPolicy', () => {
  test('takes a retry, a breaker, a budget, a timeout and pipelines of them', () => {
    expectTypeOf(retry()).toExtend<TransferPolicy>();
    expectTypeOf(circuitBreaker()).toExtend<TransferPolicy>();
    expectTypeOf(retryBudget()).toExtend<TransferPolicy>();
    expectTypeOf(timeout(1000)).toExtend<TransferPolicy>();
    void resumingGet({ request, policy: pipeline(retry(), circuitBreaker()) });
  });

  test('refuses a fallback, whose substitute value is no response to read bytes from', () => {
    const substitute = fallback('cached');
    // @ts-expect-error a fallback may return a string instead of a response
    void resumingGet({ request, policy: substitute });
    // @ts-expect-error the same inside a pipeline
    void resumingGet({ request, policy: pipeline(retry(), substitute) });
  });
});
