/** What TypeScript infers from @keel/queue: payloads follow `openQueue<T>` everywhere. */
import { circuitBreaker, pipeline, retry, type KeelError } from 'keel';
import { createOutageQueue, openQueue, type Queue, type RunOutcome } from '@keel/queue';
import { describe, expectTypeOf, test } from 'vitest';

interface Order {
  orderId: string;
  cents: number;
}

declare const orders: Queue<Order>;

describe('openQueue<T> payloads', () => {
  test('openQueue<T> gives a queue of T, and of unknown payloads without a type argument', () => {
    expectTypeOf(openQueue<Order>('orders.db')).resolves.toEqualTypeOf<Queue<Order>>();
    expectTypeOf(openQueue('orders.db')).resolves.toEqualTypeOf<Queue>();
  });

  test('enqueue takes a T and nothing else', () => {
    void orders.enqueue({ orderId: '42', cents: 100 });
    // @ts-expect-error cents is missing
    void orders.enqueue({ orderId: '42' });
    // @ts-expect-error orderId is a string
    void orders.enqueue({ orderId: 42, cents: 100 });
  });

  test("a handler's job carries the payload as T", () => {
    orders.process(async (job) => {
      expectTypeOf(job.payload).toEqualTypeOf<Order>();
      expectTypeOf(job.attempt).toEqualTypeOf<number>();
      expectTypeOf(job.signal).toEqualTypeOf<AbortSignal>();
      await Promise.resolve();
    });
  });

  test('listed items and dead letters carry T (undefined while encrypted without a key)', () => {
    expectTypeOf(orders.list('pending'))
      .resolves.items.toHaveProperty('payload')
      .toEqualTypeOf<Order | undefined>();
    expectTypeOf(orders.deadLetters())
      .resolves.items.toHaveProperty('payload')
      .toEqualTypeOf<Order | undefined>();
  });
});

describe('outage queues', () => {
  test("runOrQueue takes the queue's payload and answers the operation's value or where it was queued", () => {
    const outage = createOutageQueue({
      queue: orders,
      policy: pipeline(retry(), circuitBreaker()),
      operation: async (order, ctx) => {
        expectTypeOf(order).toEqualTypeOf<Order>();
        expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
        return Promise.resolve({ receipt: order.orderId });
      },
    });
    const out = outage.runOrQueue({ orderId: '42', cents: 100 });
    expectTypeOf(out).resolves.toEqualTypeOf<RunOutcome<{ receipt: string }>>();
    void out.then((o) => {
      if (o.status === 'done') expectTypeOf(o.value).toEqualTypeOf<{ receipt: string }>();
      else {
        expectTypeOf(o.reason).toEqualTypeOf<'unavailable' | 'backlog'>();
        expectTypeOf(o.error).toEqualTypeOf<KeelError | undefined>();
      }
    });
    // @ts-expect-error the payload is an Order
    void outage.runOrQueue({ orderId: '42' });
  });
});
