import { statfs as fsStatfs } from 'node:fs/promises';
import type { AlertManager } from './alerts/manager.js';
import type { HealthRegistry } from './health.js';

/** The part of `fs.StatFs` the monitor reads. */
export interface StatfsResult {
  bsize: number;
  /** Blocks of the file system. */
  blocks: number;
  /** Free blocks, the ones reserved for root included. */
  bfree: number;
  /** Free blocks an unprivileged user can have. */
  bavail: number;
  files: number;
  ffree: number;
}

/** Space of a file system as `df` counts it. */
export interface SpaceReading {
  /** Bytes in use: blocks − free blocks (root's reserve, which is free, not counted). */
  usedBytes: number;
  /** Bytes an unprivileged user can still write. */
  freeBytes: number;
  /** usedBytes / (usedBytes + freeBytes): `df`'s Use%, 0..1; 0 for an empty reading. */
  usedRatio: number;
}

/**
 * Used and free space as `df` computes them: used / (used + available to unprivileged users).
 * Blocks reserved for root are neither: counting them as used (1 − available / total) reads a
 * file system with a large reserve as far fuller than it is.
 */
export function spaceOf(s: StatfsResult): SpaceReading {
  const usedBytes = Math.max(0, s.blocks - s.bfree) * s.bsize;
  const freeBytes = s.bavail * s.bsize;
  const usable = usedBytes + freeBytes;
  return { usedBytes, freeBytes, usedRatio: usable > 0 ? usedBytes / usable : 0 };
}

/** Level of a path's usage. */
export type DiskLevel = 'ok' | 'warning' | 'critical';

/** One path's usage. */
export interface DiskUsage {
  path: string;
  /** Size of the file system (root's reserve included). */
  totalBytes: number;
  /** Bytes in use (see {@link spaceOf}). */
  usedBytes: number;
  /** Bytes an unprivileged user can still write. */
  freeBytes: number;
  /** Used share as `df` shows it, 0..1: usedBytes / (usedBytes + freeBytes). */
  usedRatio: number;
  /** Used share of inodes, (files − ffree) / files as `df -i` shows it, 0..1 (0 when the file system reports none). */
  inodesUsedRatio: number;
  level: DiskLevel;
}

/** Options of {@link DiskMonitor}. */
export interface DiskMonitorOptions {
  paths: readonly string[];
  /** Used share at which the level is `warning`. Default 0.8. */
  warningRatio?: number;
  /** Used share at which the level is `critical`. Default 0.9. */
  criticalRatio?: number;
  /** Inode thresholds. Default the same as the space ones. */
  inodeWarningRatio?: number;
  inodeCriticalRatio?: number;
  /** For tests: replaces `fs.promises.statfs`. */
  statfs?: (path: string) => Promise<StatfsResult>;
  alerts?: AlertManager;
  /** Called when a path reaches a level (e.g. start a cleanup or cache eviction). */
  onLevel?: (usage: DiskUsage) => void;
}

function ratio(name: string, v: number | undefined, def: number): number {
  const r = v ?? def;
  if (!Number.isFinite(r) || r <= 0 || r > 1)
    throw new Error(`disk.${name}: must be in (0, 1], got ${String(v)}`);
  return r;
}

/**
 * Watches the space and inodes of configured paths with `fs.statfs` (no child processes), used
 * shares computed as `df` does (see {@link spaceOf}).
 * Crossing a threshold raises a `DiskSpaceLow` alert (warning or critical); going back under
 * resolves it. {@link DiskMonitor.healthCheck} plugs it into a {@link HealthRegistry}.
 */
export class DiskMonitor {
  private readonly warning: number;
  private readonly critical: number;
  private readonly inodeWarning: number;
  private readonly inodeCritical: number;
  private readonly levels = new Map<string, DiskLevel>();
  private last: DiskUsage[] = [];

  constructor(private readonly options: DiskMonitorOptions) {
    if (options.paths.length === 0) throw new Error('disk.paths: at least one path is required');
    this.warning = ratio('warningRatio', options.warningRatio, 0.8);
    this.critical = ratio('criticalRatio', options.criticalRatio, 0.9);
    if (this.warning >= this.critical) throw new Error('disk.warningRatio: must be below disk.criticalRatio');
    this.inodeWarning = ratio('inodeWarningRatio', options.inodeWarningRatio, this.warning);
    this.inodeCritical = ratio('inodeCriticalRatio', options.inodeCriticalRatio, this.critical);
  }

  /** Reads every path now, updates levels and alerts, returns the usage. */
  async check(): Promise<DiskUsage[]> {
    const statfs = this.options.statfs ?? ((p: string) => fsStatfs(p));
    const out: DiskUsage[] = [];
    for (const path of this.options.paths) {
      const s = await statfs(path);
      const { usedBytes, freeBytes, usedRatio } = spaceOf(s);
      const inodesUsedRatio = s.files > 0 ? (s.files - s.ffree) / s.files : 0;
      const level: DiskLevel =
        usedRatio >= this.critical || inodesUsedRatio >= this.inodeCritical
          ? 'critical'
          : usedRatio >= this.warning || inodesUsedRatio >= this.inodeWarning
            ? 'warning'
            : 'ok';
      const usage = {
        path,
        totalBytes: s.blocks * s.bsize,
        usedBytes,
        freeBytes,
        usedRatio,
        inodesUsedRatio,
        level,
      };
      out.push(usage);
      this.transition(usage);
    }
    this.last = out;
    return out;
  }

  /** The last readings, for `/status`. */
  snapshot(): DiskUsage[] {
    return [...this.last];
  }

  /** Registers a `disk:utilization` check: `warn` at warning, `fail` at critical (non-critical by default). */
  healthCheck(health: HealthRegistry, options: { critical?: boolean; intervalMs?: number } = {}): () => void {
    return health.register({
      name: 'disk:utilization',
      componentType: 'system',
      critical: options.critical ?? false,
      ...(options.intervalMs !== undefined ? { intervalMs: options.intervalMs } : {}),
      run: async () => {
        const usage = await this.check();
        const worst = usage.reduce((a, u) => (u.usedRatio > a.usedRatio ? u : a));
        const bad = usage.filter((u) => u.level !== 'ok');
        const status = usage.some((u) => u.level === 'critical') ? 'fail' : bad.length > 0 ? 'warn' : 'pass';
        return {
          status,
          observedValue: Math.round(worst.usedRatio * 1000) / 10,
          observedUnit: 'percent',
          output: bad.map((u) => `${u.path} ${(u.usedRatio * 100).toFixed(1)}% used (${u.level})`).join('; '),
        };
      },
    });
  }

  private transition(usage: DiskUsage): void {
    const previous = this.levels.get(usage.path) ?? 'ok';
    this.levels.set(usage.path, usage.level);
    if (previous === usage.level) return;
    if (usage.level !== 'ok') this.options.onLevel?.(usage);
    const alerts = this.options.alerts;
    if (!alerts) return;
    alerts.resolve('DiskSpaceLow', { path: usage.path, level: previous });
    if (usage.level === 'ok') return;
    alerts.raise({
      name: 'DiskSpaceLow',
      severity: usage.level === 'critical' ? 'critical' : 'warning',
      summary: `${usage.path} is ${(usage.usedRatio * 100).toFixed(1)}% full (inodes ${(usage.inodesUsedRatio * 100).toFixed(1)}%)`,
      labels: { path: usage.path, level: usage.level },
      details: { freeBytes: usage.freeBytes, totalBytes: usage.totalBytes },
    });
  }
}
