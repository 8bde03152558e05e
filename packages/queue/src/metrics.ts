import type { QueueCounts } from '@keel/store';
import type { Outcome } from './outcomes.js';

/**
 * The part of @keel/ops' `Metrics` the queue registers its metrics with. Structural, so the queue
 * does not depend on @keel/ops: pass `createMetrics()` from it, or anything with the same shape.
 */
export interface MetricsHelpers {
  counter<L extends string>(name: string, help: string, labelNames?: readonly L[]): CounterLike<L>;
  gauge<L extends string>(
    name: string,
    help: string,
    labelNames?: readonly L[],
    collect?: (gauge: GaugeLike<L>) => void | Promise<void>,
  ): unknown;
}

/** A counter as the queue uses it. */
export interface CounterLike<L extends string> {
  inc(labels: Partial<Record<L, string>>, value?: number): void;
}

/** A gauge as the queue uses it. */
export interface GaugeLike<L extends string> {
  set(labels: Partial<Record<L, string>>, value: number): void;
}

/** What {@link bindQueueMetrics} reads from a queue. */
export interface QueueMetricsSource {
  name: string;
  counts(): Promise<QueueCounts>;
  now(): number;
  depthThreshold: number;
  onOutcome(listener: (outcome: Outcome) => void): void;
}

/**
 * Registers a queue's metrics, labelled `queue`: `keel_queue_items{state}` (pending, active,
 * completed, dead), `keel_queue_oldest_pending_age_seconds`, `keel_queue_store_up` (1 when the last
 * scrape could read the store, else 0; the other gauges then keep their last values),
 * `keel_queue_depth_threshold`, and the counter `keel_queue_outcomes_total{outcome}` (completed,
 * failed, dead, stale; `dead` counts failures that became dead letters, also counted as failed).
 */
export function bindQueueMetrics(metrics: MetricsHelpers, source: QueueMetricsSource): void {
  const queue = source.name;
  // The gauges of one scrape are collected together: they share one read of the store.
  let inflight: Promise<QueueCounts | undefined> | undefined;
  const read = (): Promise<QueueCounts | undefined> =>
    (inflight ??= source
      .counts()
      .then(
        (r): QueueCounts | undefined => r,
        () => undefined,
      )
      .finally(() => {
        inflight = undefined;
      }));
  metrics.gauge(
    'keel_queue_items',
    'Items in a persistent queue, by state.',
    ['queue', 'state'],
    async (g) => {
      const c = await read();
      if (c === undefined) return;
      for (const state of ['pending', 'active', 'completed', 'dead'] as const)
        g.set({ queue, state }, c[state]);
    },
  );
  metrics.gauge(
    'keel_queue_oldest_pending_age_seconds',
    'Age of the oldest pending item of a queue (0 when none is pending).',
    ['queue'],
    async (g) => {
      const c = await read();
      if (c === undefined) return;
      g.set({ queue }, c.oldestPendingAt === null ? 0 : Math.max(0, source.now() - c.oldestPendingAt) / 1000);
    },
  );
  metrics.gauge(
    'keel_queue_store_up',
    "1 when the queue's store answered the last scrape, 0 when it was unreachable.",
    ['queue'],
    async (g) => {
      g.set({ queue }, (await read()) === undefined ? 0 : 1);
    },
  );
  metrics.gauge(
    'keel_queue_depth_threshold',
    'Pending items above which a queue counts as backed up (its depthThreshold option).',
    ['queue'],
    (g) => {
      g.set({ queue }, source.depthThreshold);
    },
  );
  const outcomes = metrics.counter(
    'keel_queue_outcomes_total',
    'Items handled by this process, by outcome (dead: failures that became dead letters).',
    ['queue', 'outcome'],
  );
  for (const outcome of ['completed', 'failed', 'dead', 'stale'] as const)
    outcomes.inc({ queue, outcome }, 0);
  source.onOutcome((outcome) => {
    outcomes.inc({ queue, outcome });
  });
}
