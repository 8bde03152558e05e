import os from 'node:os';
import { Gauge } from 'prom-client';
import type { DestinationStream, Logger } from 'pino';
import path from 'node:path';
import { classify, systemClock, wrap, type TimerHandle } from 'keel';
import {
  createLogger,
  DiskMonitor,
  GracefulShutdown,
  HealthRegistry,
  parseAdminToken,
  ProcessRestarts,
  type AdminServer,
  type ProcessRestartsOptions,
  type AlertManager,
  type DiskUsage,
  type ShutdownResult,
  type StatfsResult,
} from '@keel/ops';
import { registerGatewayHealth, startAdminServer } from './admin/admin-server.js';
import { createGatewayAlerts, GATEWAY_ALERTS, watchGatewayAlerts } from './admin/alerting.js';
import type { GatewayConfig } from './config.js';
import { createGateway, type Gateway, type GatewayOptions } from './gateway.js';
import { startGatewayRecovery, type GatewayRecovery } from './admin/recovery.js';
import { RulesFile, type RulesReload } from './rules/rules-file.js';
import { reportRulesReloads } from './admin/rules-alerts.js';
import { joinFleet, registerCoordinatorGauge } from './coord/fleet-membership.js';
import { LocalCoordinator } from './coord/local-coordinator.js';

/** A gateway with its admin server, health, alerts, disk monitor, scheduled cleanup and graceful shutdown. */
export interface RunningGateway {
  gateway: Gateway;
  admin: AdminServer;
  health: HealthRegistry;
  alerts: AlertManager;
  /** Watches the cache's file system (absent when no cache is configured). */
  disk: DiskMonitor | undefined;
  /** Recovery actions bound to the health checks (state in `/status` under `recovery`). */
  recovery: GatewayRecovery;
  /** What the previous run left in `stateDir` (absent without `stateDir`). */
  restarts: ProcessRestarts | undefined;
  /**
   * Graceful shutdown: readiness fails, the S3 port stops accepting after `shutdownDelaySeconds`,
   * requests in flight finish (up to `drainSeconds`), then the gateway, alerts and admin server
   * close. Resolves with how it went (exit code 1 when the drain timed out or a step failed).
   */
  shutdown(): Promise<ShutdownResult>;
}

/** Extra options of {@link runGateway}, besides any {@link GatewayOptions}. */
export interface RunOptions extends Partial<GatewayOptions> {
  /** Drain and exit on SIGTERM/SIGINT (a second signal exits at once). Default false. */
  handleSignals?: boolean;
  /** Runs last at shutdown (the demo stops its origin here). */
  afterShutdown?: () => Promise<void>;
  /** Called with the exit code once shut down; default `process.exit` with signals, else nothing. */
  exit?: (code: number) => void;
  /**
   * Logger of the gateway's requests and operations: alerts, disk, cleanup, recovery, shutdown
   * (default: JSON lines on stderr at the config's `logLevel`, secrets redacted).
   */
  logger?: Logger;
  /** Where the default logger writes (default stderr); ignored with `logger`. */
  logDestination?: DestinationStream;
  /** For tests: replaces `fs.statfs` in the disk monitor. */
  statfs?: (path: string) => Promise<StatfsResult>;
}

/**
 * Starts the gateway described by `config`: the S3 endpoint; @keel/ops' admin server (health,
 * readiness, metrics, status, cache cleanup and verify); alerts on cache bypass, disk-full
 * events, open origin breakers and a spent retry budget; a disk monitor on the cache directory
 * (every `diskCheckIntervalSeconds`; a cache cleanup when it reaches a level); recovery actions
 * on failing checks (see {@link startGatewayRecovery}: eviction when the disk is critical, a
 * probe of the cache directory while bypassed, `RecoveryFailed` when they do not help); cache
 * cleanup every `cleanupIntervalSeconds`; and graceful shutdown (with `handleSignals`, on
 * SIGTERM/SIGINT). Logs go out as JSON lines at `logLevel` (`info`: one line per request).
 * @throws when a port is taken or an alert handler cannot be set up (the message names the setting).
 */
export async function runGateway(config: GatewayConfig, extra: RunOptions = {}): Promise<RunningGateway> {
  const cacheDir = config.cacheDir ?? path.join(os.tmpdir(), 'keel-gateway-cache');
  const {
    handleSignals,
    afterShutdown,
    exit,
    statfs,
    logger: givenLogger,
    logDestination,
    ...options
  } = extra;
  const clock = options.clock ?? systemClock;
  const logger =
    givenLogger ??
    createLogger({
      name: 'keel-gateway',
      level: config.logLevel,
      destination: logDestination ?? process.stderr,
    });
  const alerts = createGatewayAlerts({
    handlers: config.alerts,
    file: config.alertsFile,
    webhookUrl: config.alertsWebhookUrl,
    // `--alerts log` asks for every alert line, resolutions (info) included, whatever the log level.
    logger: logger.isLevelEnabled('info') ? logger : logger.child({}, { level: 'info' }),
    clock,
  });
  await alerts.start();
  // --coordinator: gateways on several hosts coordinate through Redis, and while it cannot be
  // used, as they would without it (this process alone, or the workers of its host).
  const fleet =
    config.coordinator === undefined
      ? undefined
      : await joinFleet({
          url: config.coordinator,
          prefix: config.coordinatorPrefix,
          fallback: options.coordinator ?? new LocalCoordinator(),
          alerts,
          log: (level, msg) => logger[level](msg),
        });
  const log = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void => {
    logger[level](fields ?? {}, msg);
  };
  // The cache rules, read again whenever the file changes (each --workers worker watches it).
  const rulesReported: { onReload?: (reload: RulesReload) => void } = {};
  const rules =
    config.rulesFile === undefined
      ? undefined
      : await RulesFile.open({ path: config.rulesFile, log, onReload: (r) => rulesReported.onReload?.(r) });
  const gateway = await createGateway({
    upstream: config.upstream,
    originCredentials:
      config.originAccessKeyId && config.originSecretAccessKey
        ? { accessKeyId: config.originAccessKeyId, secretAccessKey: config.originSecretAccessKey }
        : undefined,
    region: config.region,
    auth: config.auth,
    authCacheMs: config.authCacheSeconds * 1000,
    clientKeys: config.clientKeys,
    cacheDir,
    cacheMaxBytes: config.cacheMaxBytes,
    memoryCacheBytes: config.memoryCacheBytes,
    sliceBytes: config.sliceBytes,
    ttlMs: config.ttlSeconds * 1000,
    revalidation: {
      timeoutMs: config.revalidateTimeoutSeconds * 1000,
      backoffMs: config.revalidateBackoffSeconds * 1000,
      maxBackoffMs: config.revalidateMaxBackoffSeconds * 1000,
    },
    baseDomain: config.baseDomain,
    firstByteTimeoutMs: config.originFirstByteTimeoutSeconds * 1000,
    deadlineMs: config.originDeadlineSeconds * 1000,
    unsignedRequests: config.unsignedRequests,
    readAheadSlices: config.readAheadSlices,
    writeThrough: config.writeThrough,
    ...(rules ? { rules: () => rules.current() } : {}),
    requestLog: logger.isLevelEnabled('info'),
    // In the same JSON lines as the rest (request URLs come with presigned secrets already removed).
    log,
    ...options,
    ...(fleet ? { coordinator: fleet.coordinator } : {}),
  }).catch((err: unknown) => {
    rules?.close();
    throw err;
  });
  rulesReported.onReload = reportRulesReloads(gateway.metrics.registry, alerts, config.rulesFile);
  const cache = gateway.cache;
  const stopWatching = watchGatewayAlerts(gateway, alerts);
  const health = new HealthRegistry({ serviceId: 'keel-gateway', clock });

  const disk = cache
    ? new DiskMonitor({
        paths: [cache.dir],
        warningRatio: config.diskWarningPercent / 100,
        criticalRatio: config.diskCriticalPercent / 100,
        alerts,
        ...(statfs ? { statfs } : {}),
        onLevel: (usage) => void cleanAfterLevel(usage),
      })
    : undefined;
  // Any level: a cleanup (cheap, frees partial writes). Eviction at the critical level is the
  // disk:utilization recovery's job, sized to what the file system needs.
  const cleanAfterLevel = async (usage: DiskUsage): Promise<void> => {
    if (!cache) return;
    try {
      await cache.cleanup();
    } catch (err) {
      logger.warn(`cache cleanup after disk ${usage.level} failed: ${classify(err).message}`);
    }
  };
  registerGatewayHealth(gateway, health, disk);
  if (fleet) fleet.bind(gateway, health);
  else registerCoordinatorGauge(gateway.metrics.registry, () => 1);
  const recovery = startGatewayRecovery(gateway, {
    health,
    alerts,
    disk,
    diskTargetRatio: config.diskWarningPercent / 100,
    clock,
    log,
  });
  // Through the health check, so a critical level starts its recovery.
  const checkDisk = async (): Promise<void> => {
    if (!disk) return;
    const result = await health.runCheck('disk:utilization');
    // A check that could not read the disk has no observed value, only why.
    if (result.observedValue === undefined) {
      logger.warn(`disk check of ${cacheDir} failed: ${result.output ?? 'no reading'}`);
      return;
    }
    if (disk.snapshot().every((u) => u.level === 'ok') && !cache?.bypassed)
      alerts.resolve(GATEWAY_ALERTS.diskFull, { component: 'cache' });
  };
  if (disk)
    new Gauge({
      name: 'keel_disk_used_ratio',
      help: 'Used share (0..1) of the file system holding the cache directory, as the disk monitor last read it.',
      labelNames: ['path'],
      registers: [gateway.metrics.registry],
      collect() {
        this.reset();
        for (const u of disk.snapshot()) this.set({ path: u.path }, u.usedRatio);
      },
    });

  // The pending timer of each periodic job (one per job: a tick replaces the one that fired).
  const timers = new Map<string, TimerHandle>();
  let stopped = false;
  const stopTimers = (): void => {
    stopped = true;
    for (const t of timers.values()) t.cancel();
    timers.clear();
  };
  const every = (job: string, seconds: number, fn: () => Promise<void>): void => {
    const tick = (): void => {
      timers.set(
        job,
        clock.setTimer(seconds * 1000, () => {
          void fn().finally(() => {
            if (!stopped) tick();
          });
        }),
      );
    };
    tick();
  };
  if (cache) {
    every('cleanup', config.cleanupIntervalSeconds, async () => {
      await cache.cleanup().catch((err: unknown) => {
        logger.warn(`scheduled cache cleanup failed: ${classify(err).message}`);
      });
    });
    // Read once at start, so levels, alerts and keel_disk_used_ratio are known before the first period.
    await checkDisk();
    every('disk', config.diskCheckIntervalSeconds, checkDisk);
  }

  // The S3 port is drained by gateway.close() in the last hook, not by GracefulShutdown's own
  // drain: that closes a keep-alive connection as soon as its response is written, and a client
  // still reading a large body from its socket buffer (undici, for one) then drops the response.
  // gateway.close() stops accepting, waits for responses in flight, then lets finished
  // connections close by keep-alive timeout before it closes them.
  const shutdown = new GracefulShutdown({
    health,
    delayMs: config.shutdownDelaySeconds * 1000,
    drainTimeoutMs: config.drainSeconds * 1000,
    hookTimeoutMs: config.drainSeconds * 1000 + 10_000,
    clock,
    exit: exit ?? (handleSignals ? (code) => process.exit(code) : () => undefined),
    log: (message, fields, level) => {
      logger[level](fields, `shutdown: ${message}`);
    },
  });
  let admin: AdminServer | undefined;
  let restarts: ProcessRestarts | undefined;
  try {
    await naming('--listen (KEEL_LISTEN)', config.listenHost, config.listenPort, () =>
      gateway.listen(config.listenPort, config.listenHost),
    );
    admin = await naming('--admin (KEEL_ADMIN_LISTEN)', config.adminHost, config.adminPort, () =>
      startAdminServer(gateway, {
        port: config.adminPort,
        host: config.adminHost,
        token: config.adminToken,
        tokens:
          config.adminReadToken === undefined
            ? []
            : [parseAdminToken(config.adminReadToken, '--admin-read-token (KEEL_ADMIN_READ_TOKEN)', 'read')],
        health,
        log: (level, msg, fields) => {
          // Actions are logged whatever the log level: who changed what matters afterwards.
          (logger.isLevelEnabled(level) ? logger : logger.child({}, { level }))[level](fields, msg);
        },
        diskWarningRatio: config.diskWarningPercent / 100,
        diskCriticalRatio: config.diskCriticalPercent / 100,
        disk,
        alerts,
        recovery,
        ...(fleet ? { views: [fleet.view()] } : {}),
      }),
    );
    // Once both ports are bound (a start that fails there records no run): a start after a crash
    // or a kill (no clean-shutdown marker from the last run) raises ProcessRestarted, several
    // within the window ProcessRestartLoop.
    if (config.stateDir !== undefined) {
      restarts = await noticeRestarts(config.stateDir, {
        alerts,
        health,
        metrics: gateway.metrics.ops,
        clock,
      });
      const previous = restarts.previous;
      if (previous && !previous.clean)
        logger.warn(
          { previousPid: previous.pid, previousStartedAt: previous.startedAt },
          'the previous run of this gateway did not shut down cleanly (crashed or killed)',
        );
    }
  } catch (err) {
    await admin?.close();
    rules?.close();
    stopTimers();
    stopWatching();
    recovery.close();
    await gateway.close(0);
    await fleet?.close();
    await alerts.close();
    throw err;
  }
  await checkDisk();
  health.markStarted();

  // Hooks run in reverse order: the gateway (fills reach the cache), alerts, admin, the caller's,
  // then the clean-shutdown marker: a run that got that far did not crash.
  if (restarts) {
    const marker = restarts;
    shutdown.addHook('clean-shutdown marker', () => marker.markCleanShutdown());
  }
  if (afterShutdown) shutdown.addHook('after', afterShutdown);
  shutdown.addHook('admin', () => admin.close());
  shutdown.addHook('alerts', () => alerts.close());
  // After the gateway (its fills reach the cache and their followers are told), before the alerts.
  if (fleet) shutdown.addHook('fleet', () => fleet.close());
  shutdown.addHook('gateway', async () => {
    rules?.close();
    stopTimers();
    stopWatching();
    recovery.close();
    // gateway.close() cuts what is still in flight at the deadline; that is a failed drain (exit 1).
    let cut = 0;
    const deadline = clock.setTimer(config.drainSeconds * 1000, () => {
      cut = gateway.inFlight();
    });
    await gateway.close(config.drainSeconds * 1000);
    deadline.cancel();
    if (cut > 0)
      throw new Error(
        `drain timed out: ${cut} request(s) still in flight after ${config.drainSeconds} s were cut`,
      );
  });
  if (handleSignals) shutdown.install();
  return {
    gateway,
    admin,
    health,
    alerts,
    disk,
    recovery,
    restarts,
    shutdown: () => shutdown.shutdown('requested'),
  };
}

/**
 * `--state-dir`: what the previous run left in `dir` (see @keel/ops' ProcessRestarts), raising
 * `ProcessRestarted` when it did not shut down cleanly.
 * @throws KeelError naming the setting and the directory when it cannot be used.
 */
export function noticeRestarts(
  dir: string,
  options: Omit<ProcessRestartsOptions, 'dir'>,
): Promise<ProcessRestarts> {
  return ProcessRestarts.start({ dir, ...options }).catch((err: unknown) => {
    const e = classify(err);
    throw wrap(err, e.code, `--state-dir (KEEL_STATE_DIR) ${dir}: ${e.message}`);
  });
}

/** Runs `start`; its failure (a taken port: `ADDRESS_IN_USE`) keeps its code and names the setting and address. */
async function naming<T>(setting: string, host: string, port: number, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const error = classify(err);
    throw wrap(err, error.code, `${setting} ${host}:${port}: ${error.message}`);
  }
}
