import { classify } from 'keel';
import type { RangeCache } from 'keel/cache';
import {
  AutoRecovery,
  type AlertManager,
  type DiskMonitor,
  type HealthRegistry,
  type RecoveryState,
} from '@keel/ops';
import type { Clock } from 'keel';
import type { Gateway } from '../gateway.js';

/** Options of {@link startGatewayRecovery}. */
export interface GatewayRecoveryOptions {
  /** The registry holding the gateway's checks (see `registerGatewayHealth`). */
  health: HealthRegistry;
  /** Where `RecoveryFailed` goes when a recovery runs out of attempts. */
  alerts: AlertManager;
  /** The monitor behind `disk:utilization` (no disk recovery without it). */
  disk?: DiskMonitor | undefined;
  /** Used share (0..1) of the cache's file system that disk recovery evicts down to. */
  diskTargetRatio: number;
  /** Attempts before `RecoveryFailed` is raised (default 3). */
  maxAttempts?: number;
  clock?: Clock;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** The gateway's recoveries, by the name of the check that starts them. */
export interface GatewayRecovery {
  /** Each recovery's state (for `/status`). */
  states(): Record<string, RecoveryState>;
  /** Stops the recoveries (a running action is aborted). */
  close(): void;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

/**
 * `disk:utilization` failed (the cache's file system is at the critical level): clean the cache,
 * then evict least recently used slices until the file system would be back under `targetRatio`.
 * When even the whole cache is not enough, something else fills the file system: say so.
 */
async function relieveDisk(cache: RangeCache, disk: DiskMonitor, targetRatio: number): Promise<void> {
  await cache.cleanup();
  for (const usage of await disk.check()) {
    // Used share as df counts it, used / (used + free): a byte freed moves from one to the other.
    const needed = Math.ceil(usage.usedBytes - targetRatio * (usage.usedBytes + usage.freeBytes));
    if (needed <= 0) continue;
    const held = cache.stats().sizeBytes;
    await cache.evictTo(Math.max(0, held - needed));
    if (needed > held)
      throw new Error(
        `${usage.path} needs ${mib(needed)} freed to get under ${Math.round(targetRatio * 100)} % used, ` +
          `but the cache held only ${mib(held)} (now evicted): something else is filling this file system; ` +
          'free space there or move the cache to another disk',
      );
  }
}

/**
 * `cache:writable` failed (the cache is bypassed): clean the cache (leftover partial writes take
 * space on a full disk), then have the cache probe its disk at once; the attempt fails with the
 * probe's answer while the disk is not usable yet (I/O errors too recent, too little room, or
 * the write refused).
 */
async function restoreCache(cache: RangeCache): Promise<void> {
  if (!cache.bypassed) return;
  // A cleanup that cannot run is no reason not to probe.
  await cache.cleanup().catch(() => undefined);
  try {
    await cache.probeBypass();
  } catch (err) {
    throw new Error(`cache directory ${cache.dir} is still not usable: ${classify(err).message}`);
  }
}

/**
 * Binds @keel/ops' {@link AutoRecovery} to the gateway's health checks where an action can help:
 * - `disk:utilization` failing (critical level): cache cleanup, then eviction of least recently
 *   used slices until the file system is back under `diskTargetRatio`;
 * - `cache:writable` failing (bypass): cache cleanup, then the cache's own write probe at once
 *   (which ends bypass when the disk takes writes again).
 * `origin:reachable` gets none: the breaker already probes the origin itself once half-open, and
 * nothing the gateway can do locally makes an unreachable origin reachable.
 * Each recovery tries `maxAttempts` times, then raises `RecoveryFailed{check}` (critical) until
 * its check passes again. The checks run when the disk is checked and when the cache enters or
 * leaves bypass (and whenever `/health` is asked).
 */
export function startGatewayRecovery(gateway: Gateway, options: GatewayRecoveryOptions): GatewayRecovery {
  const cache = gateway.cache;
  if (!cache) return { states: () => ({}), close: () => undefined };
  const recoveries = new Map<string, AutoRecovery>();
  const { health, alerts, log } = options;
  const common = {
    alerts,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.maxAttempts !== undefined ? { maxAttempts: options.maxAttempts } : {}),
  };
  const logChanges = (check: string): ((state: RecoveryState) => void) => {
    let reported = 0;
    return (state) => {
      if (state.status === 'recovering') log('warn', `recovery of ${check}: attempt ${state.attempts}`);
      const last = state.history.at(-1);
      if (state.history.length > reported && last) {
        reported = state.history.length;
        if (last.outcome === 'recovered') log('warn', `recovery of ${check}: recovered`);
        else
          log('warn', `recovery of ${check}: attempt ${last.attempt} ${last.outcome}`, {
            error: last.error,
          });
      }
      if (state.status === 'exhausted')
        log('error', `recovery of ${check}: gave up after ${state.history.length} attempt(s)`);
    };
  };

  const disk = options.disk;
  if (disk) {
    const check = 'disk:utilization';
    recoveries.set(
      check,
      new AutoRecovery(health, {
        ...common,
        check,
        action: () => relieveDisk(cache, disk, options.diskTargetRatio),
        onChange: logChanges(check),
      }),
    );
  }

  const check = 'cache:writable';
  recoveries.set(
    check,
    new AutoRecovery(health, {
      ...common,
      check,
      action: () => restoreCache(cache),
      onChange: logChanges(check),
    }),
  );
  // The check is on demand: run it when the cache's state changes, so recovery starts at once
  // and learns of a recovery the cache made by itself.
  const onBypass = (): void => {
    void health.runCheck(check).catch(() => undefined);
  };
  cache.on('bypass', onBypass);
  if (cache.bypassed) onBypass();

  return {
    states: () => Object.fromEntries([...recoveries].map(([name, r]) => [name, r.state()])),
    close: () => {
      cache.off('bypass', onBypass);
      for (const r of recoveries.values()) r.close();
    },
  };
}
