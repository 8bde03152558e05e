import type { GroupStatus } from '@keel/store';
import { TRANSITIONS } from './status.js';
import type { RecoveryReport } from './types.js';

/**
 * The part of @keel/ops' `Metrics` groups register their metrics with. Structural, so groups do
 * not depend on @keel/ops: pass `createMetrics()` from it, or anything with the same shape.
 */
export interface MetricsHelpers {
  counter<L extends string>(
    name: string,
    help: string,
    labelNames?: readonly L[],
  ): { inc(labels: Partial<Record<L, string>>, value?: number): void };
  gauge<L extends string>(
    name: string,
    help: string,
    labelNames?: readonly L[],
    collect?: (gauge: {
      set(labels: Partial<Record<L, string>>, value: number): void;
    }) => void | Promise<void>,
  ): unknown;
}

/** What {@link bindGroupMetrics} reads. */
export interface GroupMetricsSource {
  countByStatus(): Promise<Partial<Record<GroupStatus, number>>>;
  stuckCount(): Promise<number>;
}

/**
 * Registers `keel_groups{status}` (groups in each status in the store), `keel_groups_stuck`
 * (active groups whose lease expired or that made no progress) and returns the recorder of
 * `keel_group_recoveries_total{strategy,outcome}`. A scrape that cannot read the store keeps the
 * last values.
 */
export function bindGroupMetrics(
  metrics: MetricsHelpers,
  source: GroupMetricsSource,
): (report: RecoveryReport) => void {
  type Read = [Partial<Record<GroupStatus, number>>, number] | undefined;
  // The gauges of one scrape are collected together: they share one read of the store.
  let inflight: Promise<Read> | undefined;
  const read = (): Promise<Read> =>
    (inflight ??= Promise.all([source.countByStatus(), source.stuckCount()])
      .then(
        (r): Read => r,
        () => undefined,
      )
      .finally(() => {
        inflight = undefined;
      }));
  metrics.gauge('keel_groups', 'Operation groups in the store, by status.', ['status'], async (g) => {
    const r = await read();
    if (r === undefined) return;
    for (const status of Object.keys(TRANSITIONS) as GroupStatus[]) g.set({ status }, r[0][status] ?? 0);
  });
  metrics.gauge(
    'keel_groups_stuck',
    'Active groups whose worker lease expired or that made no progress for stuckAfterMs.',
    [],
    async (g) => {
      const r = await read();
      if (r !== undefined) g.set({}, r[1]);
    },
  );
  const recoveries = metrics.counter(
    'keel_group_recoveries_total',
    'Recovery actions on groups by strategy and outcome (recovered, failed-again, skipped).',
    ['strategy', 'outcome'],
  );
  return (report) => {
    for (const a of report.actions) recoveries.inc({ strategy: a.strategy, outcome: a.action });
  };
}
