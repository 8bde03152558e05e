import { classify, keelError, type Clock, type TimerHandle } from 'keel';
import type { GroupStatus, ResourceWithOwner } from '@keel/store';
import type { ExecutorContext } from './executors.js';
import type { GroupManager } from './manager.js';
import { TERMINAL_STATUSES } from './status.js';

/** Retention by age, in ms. */
export interface RetentionOptions {
  /** failed, rolled_back, rollback_failed (default 24 h). */
  failedMs?: number;
  /** completed and stopped (default 30 days). */
  completedMs?: number;
  /** log lines of any group (default 30 days). */
  logsMs?: number;
  /** Temporary resources no live group owns are removed once registered this long ago (default 1 h). */
  resourcesMs?: number;
}

/** What {@link cleanupGroups} removed. */
export interface RetentionReport {
  groupsDeleted: Partial<Record<GroupStatus, number>>;
  logsDeleted: number;
  /** Orphaned temporary resources whose cleanup command ran. */
  resourcesRemoved: { groupId: string; name: string }[];
  /** Orphaned temporary resources whose cleanup failed; they are tried again at the next cleanup. */
  resourcesFailed: { groupId: string; name: string; error: string }[];
}

/** The outcome of the last scheduled cleanup. */
export type RetentionStatus =
  { at: number; ok: true; report: RetentionReport } | { at: number; ok: false; error: string };

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** The retention ages with their defaults; throws INVALID_CONFIG naming a bad one. */
export function retentionAges(options: RetentionOptions): Required<RetentionOptions> {
  const ages = {
    failedMs: options.failedMs ?? DAY,
    completedMs: options.completedMs ?? 30 * DAY,
    logsMs: options.logsMs ?? 30 * DAY,
    resourcesMs: options.resourcesMs ?? HOUR,
  };
  for (const [k, v] of Object.entries(ages)) {
    if (!Number.isFinite(v) || v < 0)
      throw keelError('INVALID_CONFIG', `retention.${k} must be a number of ms >= 0, got ${String(v)}`);
  }
  return ages;
}

/** True when no live group owns the resource: its group ended or was deleted. */
const orphaned = (r: ResourceWithOwner): boolean =>
  r.groupStatus === null || TERMINAL_STATUSES.includes(r.groupStatus);

/**
 * Temporary resources registered more than `resourcesMs` ago that no live group owns (its group
 * finished, failed, was rolled back or deleted): what {@link cleanupGroups} removes and the health
 * check reports. At most 1000 per call.
 */
export async function orphanedResources(
  manager: GroupManager,
  resourcesMs: number,
): Promise<ResourceWithOwner[]> {
  const all = await manager.repository.listResources({ beforeMs: manager.clock.now() - resourcesMs + 1 });
  return all.filter(orphaned);
}

/** Runs a resource's cleanup command (the registered executor's forward), with the manager's retries. */
async function removeResource(manager: GroupManager, r: ResourceWithOwner): Promise<void> {
  const executor = manager.executors.get(r.cleanup.executor);
  const signal = new AbortController().signal;
  await manager.runWithRetry(async ({ attempt }) => {
    const ctx: ExecutorContext = {
      groupId: r.groupId,
      seq: r.seq,
      target: `temporary resource ${r.name}`,
      attempt,
      signal,
      correlationId: undefined,
      progress: () => Promise.resolve(),
      registerTemporary: () =>
        Promise.reject(keelError('INVALID_INPUT', 'a cleanup command cannot register resources')),
      releaseTemporary: () => Promise.resolve(false),
    };
    await executor.forward(r.cleanup.payload, ctx);
  });
  await manager.repository.removeResource(r.groupId, r.name);
}

/**
 * Deletes finished groups and old log lines by age (defaults: failed 24 h, completed 30 days,
 * logs 30 days), then runs the cleanup command of every orphaned temporary resource older than
 * `resourcesMs` (1 h). Pending, paused and active groups, and their resources, are never touched.
 */
export async function cleanupGroups(
  manager: GroupManager,
  options: RetentionOptions = {},
): Promise<RetentionReport> {
  const ages = retentionAges(options);
  const now = manager.clock.now();
  const plan: [GroupStatus, number][] = [
    ['failed', ages.failedMs],
    ['rolled_back', ages.failedMs],
    ['rollback_failed', ages.failedMs],
    ['completed', ages.completedMs],
    ['stopped', ages.completedMs],
  ];
  const groupsDeleted: Partial<Record<GroupStatus, number>> = {};
  for (const [status, age] of plan) {
    const n = await manager.repository.deleteGroups(status, now - age);
    if (n > 0) groupsDeleted[status] = n;
  }
  const logsDeleted = await manager.repository.deleteLogs(now - ages.logsMs);
  const report: RetentionReport = { groupsDeleted, logsDeleted, resourcesRemoved: [], resourcesFailed: [] };
  for (const r of await orphanedResources(manager, ages.resourcesMs)) {
    try {
      await removeResource(manager, r);
      report.resourcesRemoved.push({ groupId: r.groupId, name: r.name });
    } catch (err) {
      report.resourcesFailed.push({ groupId: r.groupId, name: r.name, error: classify(err).message });
    }
  }
  return report;
}

/**
 * Runs a cleanup every `everyMs` on `clock` (one at a time) and keeps the outcome of the last one.
 * A failed run (store unreachable) is recorded and tried again at the next tick.
 */
export class RetentionSchedule {
  private timer: TimerHandle | undefined;
  private running: Promise<void> | undefined;
  private last: RetentionStatus | undefined;
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly everyMs: number,
    private readonly cleanup: () => Promise<RetentionReport>,
  ) {
    this.schedule();
  }

  status(): RetentionStatus | undefined {
    return this.last;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimer(this.everyMs, () => {
      if (this.running !== undefined) {
        this.schedule();
        return;
      }
      this.running = this.cleanup()
        .then(
          (report) => {
            this.last = { at: this.clock.now(), ok: true, report };
          },
          (err: unknown) => {
            this.last = { at: this.clock.now(), ok: false, error: classify(err).message };
          },
        )
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    });
  }
}
