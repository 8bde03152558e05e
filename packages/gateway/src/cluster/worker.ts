import cluster from 'node:cluster';
import os from 'node:os';
import type { Gauge } from 'prom-client';
import type { GatewayConfig } from '../config.js';
import { ClusterCoordinator } from '../coord/cluster-coordinator.js';
import { runGateway, type RunningGateway } from '../run.js';
import {
  isKeelMessage,
  WORKER_SLOT_ENV,
  type MetricsReply,
  type MetricsRequest,
  type WorkerReady,
} from './messages.js';

/**
 * Gauges of what the workers share (one cache directory, one disk) or where any one counts
 * (an open breaker): the fleet shows the largest worker's value, not the sum.
 */
const SHARED_GAUGES = [
  'keel_cache_size_bytes',
  'keel_cache_max_bytes',
  'keel_disk_used_ratio',
  'keel_gateway_cache_bypass',
  'keel_breaker_state',
] as const;

/**
 * Runs one worker of `keel gateway --workers N`: the whole gateway on the S3 port the primary
 * shares among its workers, with its admin server on an ephemeral loopback port the primary
 * reads from (the fleet's admin port is the primary's). It answers the primary's requests for its
 * metrics (prom-client's JSON), which the primary aggregates with prom-client's AggregatorRegistry. It drains on SIGTERM and also when the primary goes
 * away (its IPC channel closes).
 */
export async function runWorker(config: GatewayConfig): Promise<RunningGateway> {
  if (!cluster.isWorker || !process.send) throw new Error('runWorker: not a node:cluster worker');
  // One origin fetch per slice across the workers, and writes that reach every worker.
  const coordinator = new ClusterCoordinator();
  const running = await runGateway(
    // The primary notices restarts of the host's gateway; it replaces dead workers itself.
    { ...config, adminHost: '127.0.0.1', adminPort: 0, stateDir: undefined },
    {
      handleSignals: true,
      coordinator,
      afterShutdown: () => coordinator.close(),
      // The workers share the cores: each verifies on its share of them, not on all of them.
      cacheVerifyThreads: Math.max(1, Math.floor(os.availableParallelism() / config.workers)),
    },
  );
  const registry = running.gateway.metrics.registry;
  process.on('message', (m: unknown) => {
    if (!isKeelMessage(m) || m.keel !== 'metrics') return;
    const { req } = m as MetricsRequest;
    void registry.getMetricsAsJSON().then((metrics) => {
      const reply: MetricsReply = { keel: 'metrics-reply', req, metrics };
      process.send?.(reply);
    });
  });
  for (const name of SHARED_GAUGES) {
    const gauge = registry.getSingleMetric(name) as (Gauge & { aggregator: string }) | undefined;
    if (gauge) gauge.aggregator = 'max';
  }
  process.once('disconnect', () => {
    void running.shutdown().then((r) => process.exit(r.exitCode));
  });
  const ready: WorkerReady = { keel: 'ready', s3: running.gateway.url(), admin: running.admin.url };
  process.send(ready);
  process.title = `keel gateway worker ${process.env[WORKER_SLOT_ENV] ?? ''}`.trim();
  return running;
}
