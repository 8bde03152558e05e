import cluster, { type Worker } from 'node:cluster';
import { Counter, Gauge } from 'prom-client';
import type { Logger } from 'pino';
import { keelError } from 'keel';
import { createLogger, createMetrics, type AlertManager, type ProcessRestarts } from '@keel/ops';
import { createGatewayAlerts } from '../admin/alerting.js';
import { noticeRestarts } from '../run.js';
import type { GatewayConfig } from '../config.js';
import { ClusterCoordination } from '../coord/cluster-coordination.js';
import { startFleetAdmin, type FleetAdmin } from './fleet-admin.js';
import { closeUntakenConnectionsOnExit } from './handoff-guard.js';
import {
  isKeelMessage,
  WORKER_SLOT_ENV,
  type MetricsReply,
  type MetricsRequest,
  type WorkerReady,
} from './messages.js';

/** Name of the alert raised when a worker died and is being replaced. */
export const WORKER_RESTARTED_ALERT = 'KeelWorkerRestarted';

/** First wait before a dead worker is replaced; doubled per death in a row, up to the next. */
export const RESTART_FIRST_DELAY_MS = 100;
export const RESTART_MAX_DELAY_MS = 30_000;
/** Longest the primary waits for one worker's metrics; one that does not answer is left out. */
export const WORKER_METRICS_MS = 5_000;

/** A worker that served this long before dying starts its slot's backoff over. */
export const RESTART_STABLE_MS = 30_000;

/** One worker slot (1…N) and the process in it. */
export interface WorkerSlot {
  slot: number;
  worker: Worker | undefined;
  pid: number | undefined;
  state: 'starting' | 'ready' | 'restarting' | 'stopping' | 'exited';
  /** Its S3 endpoint and its own admin server, once ready. */
  s3: string | undefined;
  admin: string | undefined;
  restarts: number;
  /** Deaths in a row (backoff), reset by a worker that served `RESTART_STABLE_MS`. */
  failures: number;
  startedAt: number;
  lastExit: { code: number | null; signal: string | null; at: number } | undefined;
}

/** A running primary. */
export interface RunningFleet {
  /** The shared S3 endpoint and the fleet's admin server. */
  url: string;
  admin: FleetAdmin;
  slots: readonly WorkerSlot[];
  /** SIGTERMs every worker, waits for them to drain, closes the admin server; resolves with the exit code. */
  shutdown(): Promise<number>;
}

/**
 * The primary of `keel gateway --workers N`: forks N workers (node:cluster) that share the S3
 * port and the cache directory, serves the one admin port (metrics summed over the workers by
 * prom-client's AggregatorRegistry, `/status` per worker and in total, the fleet's health),
 * replaces a worker that dies (after a backoff, raising `KeelWorkerRestarted`), and on SIGTERM
 * drains every worker and exits 0 when they all did.
 * @throws KeelError when a worker fails before the fleet first served (a taken port, bad settings).
 */
export async function runPrimary(
  config: GatewayConfig,
  options: { logger?: Logger; handleSignals?: boolean } = {},
): Promise<RunningFleet> {
  if (!cluster.isPrimary) throw new Error('runPrimary: not the node:cluster primary');
  const logger =
    options.logger ??
    createLogger({ name: 'keel-gateway', level: config.logLevel, destination: process.stderr });
  const alerts: AlertManager = createGatewayAlerts({
    handlers: config.alerts,
    file: config.alertsFile,
    webhookUrl: config.alertsWebhookUrl,
    logger: logger.isLevelEnabled('info') ? logger : logger.child({}, { level: 'info' }),
  });
  await alerts.start();
  const own = createMetrics({ defaultMetrics: false });
  const registry = own.registry;
  // The primary is the host's gateway: a start after it crashed or was killed raises
  // ProcessRestarted (dead workers it replaces itself, with KeelWorkerRestarted).
  let restarts: ProcessRestarts | undefined;
  if (config.stateDir !== undefined) {
    try {
      restarts = await noticeRestarts(config.stateDir, { alerts, metrics: own });
    } catch (err) {
      await alerts.close();
      throw err;
    }
  }
  const restartsTotal = new Counter({
    name: 'keel_gateway_worker_restarts_total',
    help: 'Workers that died and were replaced.',
    registers: [registry],
  });
  const slots: WorkerSlot[] = Array.from({ length: config.workers }, (_, i) => ({
    slot: i + 1,
    worker: undefined,
    pid: undefined,
    state: 'starting',
    s3: undefined,
    admin: undefined,
    restarts: 0,
    failures: 0,
    startedAt: Date.now(),
    lastExit: undefined,
  }));
  new Gauge({
    name: 'keel_gateway_workers',
    help: 'Worker processes by state (starting, ready, restarting, stopping, exited).',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const state of ['starting', 'ready', 'restarting', 'stopping', 'exited'])
        this.set({ state }, slots.filter((s) => s.state === state).length);
    },
  });
  let stopping = false;
  let served = false;
  let startFailed: ((err: Error) => void) | undefined;
  let allReady: (() => void) | undefined;
  const started = new Promise<void>((resolve, reject) => {
    allReady = resolve;
    startFailed = reject;
  });
  started.catch(() => undefined);
  const exitedAll: (() => void)[] = [];
  // Leases (one origin fetch per slice across the workers) and invalidations go through here.
  const coordination = new ClusterCoordination();

  // Metrics asked of one worker over IPC, answered with its registry as prom-client's JSON.
  let nextMetricsReq = 0;
  const metricsWaiting = new Map<number, (m: object[] | undefined) => void>();
  const metricsOf = (s: WorkerSlot): Promise<object[] | undefined> =>
    new Promise((resolve) => {
      const worker = s.worker;
      if (!worker?.isConnected()) {
        resolve(undefined);
        return;
      }
      const req = nextMetricsReq++;
      const timer = setTimeout(() => {
        metricsWaiting.delete(req);
        resolve(undefined);
      }, WORKER_METRICS_MS);
      metricsWaiting.set(req, (m) => {
        clearTimeout(timer);
        metricsWaiting.delete(req);
        resolve(m);
      });
      worker.send({ keel: 'metrics', req } satisfies MetricsRequest);
    });
  const fork = (s: WorkerSlot): void => {
    const worker = cluster.fork({ [WORKER_SLOT_ENV]: String(s.slot) });
    s.worker = worker;
    s.pid = worker.process.pid;
    s.state = 'starting';
    s.s3 = undefined;
    s.admin = undefined;
    s.startedAt = Date.now();
    coordination.add(worker);
    // A connection handed to it as it dies is closed, not left hanging (see the function).
    closeUntakenConnectionsOnExit(worker);
    worker.on('message', (m: unknown) => {
      if (isKeelMessage(m) && m.keel === 'metrics-reply') {
        const reply = m as MetricsReply;
        metricsWaiting.get(reply.req)?.(reply.metrics);
        return;
      }
      if (!isKeelMessage(m) || m.keel !== 'ready') return;
      const ready = m as WorkerReady;
      s.state = stopping ? 'stopping' : 'ready';
      s.s3 = ready.s3;
      s.admin = ready.admin;
      if (s.restarts > 0) alerts.resolve(WORKER_RESTARTED_ALERT, { worker: String(s.slot) });
      if (slots.every((o) => o.state === 'ready')) {
        served = true;
        allReady?.();
      }
    });
    worker.once('exit', (code, signal) => {
      // What it was filling is filled by whoever asks next; nobody waits for its answers.
      coordination.remove(worker);
      s.worker = undefined;
      s.lastExit = { code, signal, at: Date.now() };
      if (stopping) {
        s.state = 'exited';
        if (slots.every((o) => o.state === 'exited')) for (const done of exitedAll.splice(0)) done();
        return;
      }
      if (!served) {
        // Before the fleet ever served, a worker that fails is a bad start (a taken port, bad
        // settings): its error is on stderr; stop the others and fail the command.
        s.state = 'exited';
        startFailed?.(
          keelError(
            'UNKNOWN',
            `worker ${s.slot} (pid ${s.pid ?? '?'}) exited with ${signal ?? `code ${code}`} before the gateway served (its error is above)`,
          ),
        );
        return;
      }
      const ranMs = Date.now() - s.startedAt;
      if (ranMs >= RESTART_STABLE_MS) s.failures = 0;
      const delay = Math.min(RESTART_MAX_DELAY_MS, RESTART_FIRST_DELAY_MS * 2 ** s.failures);
      s.failures++;
      s.restarts++;
      s.state = 'restarting';
      restartsTotal.inc();
      alerts.raise({
        name: WORKER_RESTARTED_ALERT,
        severity: 'warning',
        summary: `gateway worker ${s.slot} (pid ${s.pid ?? '?'}) exited with ${signal ?? `code ${code}`} after ${Math.round(ranMs / 1000)} s; its connections failed; replacing it in ${delay} ms (restart ${s.restarts})`,
        labels: { worker: String(s.slot) },
      });
      setTimeout(() => {
        if (!stopping) fork(s);
      }, delay).unref();
    });
  };
  for (const s of slots) fork(s);

  const stopWorkers = async (): Promise<number> => {
    stopping = true;
    const live = slots.filter((s) => s.worker !== undefined);
    for (const s of slots) if (s.worker === undefined) s.state = 'exited';
    const done = new Promise<void>((resolve) => {
      if (live.length === 0) resolve();
      else exitedAll.push(resolve);
    });
    for (const s of live) {
      s.state = 'stopping';
      s.worker?.process.kill('SIGTERM');
    }
    // A worker still there after its drain time and its hooks' is killed.
    const late = setTimeout(
      () => {
        for (const s of slots) s.worker?.process.kill('SIGKILL');
      },
      config.drainSeconds * 1000 + 15_000,
    );
    await done;
    clearTimeout(late);
    return slots.some((s) => s.lastExit && (s.lastExit.code !== 0 || s.lastExit.signal !== null)) ? 1 : 0;
  };

  try {
    await started;
  } catch (err) {
    await stopWorkers();
    restarts?.close();
    await alerts.close();
    throw err;
  }
  const url = slots[0]?.s3 ?? '';
  let admin: FleetAdmin;
  try {
    admin = await startFleetAdmin(config, {
      slots,
      registry,
      isDraining: () => stopping,
      metricsOf: (slot) => metricsOf(slot),
    });
  } catch (err) {
    await stopWorkers();
    restarts?.close();
    await alerts.close();
    throw err;
  }

  let shuttingDown: Promise<number> | undefined;
  const shutdown = (): Promise<number> => {
    shuttingDown ??= (async () => {
      logger.info({ workers: slots.length }, 'shutdown: draining every worker');
      const code = await stopWorkers();
      await admin.close();
      await alerts.close();
      await restarts?.markCleanShutdown();
      logger.info({ exitCode: code }, 'shutdown: finished');
      return code;
    })();
    return shuttingDown;
  };
  if (options.handleSignals) {
    let signals = 0;
    const onSignal = (): void => {
      // A second signal exits at once (the workers got theirs).
      if (++signals > 1) process.exit(1);
      void shutdown().then((code) => process.exit(code));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
  return { url, admin, slots, shutdown };
}
