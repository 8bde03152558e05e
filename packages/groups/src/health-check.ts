import { keelError } from 'keel';
import { stuckReason } from './diagnose.js';
import type { GroupManager } from './manager.js';
import { diff, type DiffOptions } from './reconcile.js';
import type { RecoverOptions } from './recovery.js';
import { orphanedResources, retentionAges } from './retention.js';

/** Options of {@link groupsHealthCheck}. */
export interface GroupsHealthOptions extends RecoverOptions {
  /** Key of the check (default `groups:attention`). */
  name?: string;
  /** More pending groups than this (a backlog nobody runs) make the check warn (default 100). */
  maxPending?: number;
  /** Orphaned temporary resources registered longer ago than this are reported (default 1 h). */
  resourcesMs?: number;
  /** Desired vs actual state (as for `reconcile`): any difference makes the check warn. */
  drift?: DiffOptions<unknown>;
}

/** What the check counts; the `observedValue` of its result. */
export interface GroupsHealthCounts {
  stuck: number;
  failed: number;
  rollbackFailed: number;
  orphanedResources: number;
  pending: number;
  /** Differences between desired and actual state (absent without the `drift` option). */
  drift?: number;
}

/** What the groups health check reports. */
export interface GroupsHealthOutcome {
  status: 'pass' | 'warn' | 'fail';
  observedValue?: GroupsHealthCounts;
  output?: string;
}

/**
 * A health check over groups, structurally compatible with @keel/ops: register it with
 * `HealthRegistry.register(check)` (it has `name`, `componentType` and `run`) and pass `action` to
 * `new AutoRecovery(health, { check: check.name, action: check.action })`. `check()` and `recover()`
 * are the same two things for callers without ops.
 */
export interface GroupsHealthCheck {
  name: string;
  componentType: 'component';
  check: () => Promise<GroupsHealthOutcome>;
  recover: () => Promise<void>;
  run: (signal?: AbortSignal) => Promise<GroupsHealthOutcome>;
  action: (signal?: AbortSignal) => Promise<void>;
}

const ids = (list: readonly { id: string }[]): string => list.map((g) => g.id).join(', ');

/**
 * A health check over the groups in a store: `fail` when a group is stuck (its worker's lease
 * expired, or no progress for `stuckAfterMs`) or its rollback failed; `warn` when a group is
 * `failed`, temporary resources are orphaned, more than `maxPending` groups wait, desired and
 * actual state differ (`drift`), or the last scheduled cleanup failed; else `pass`. Its `recover()`
 * / `action()` runs `manager.recover()` and throws if a group is still not recovered.
 */
export function groupsHealthCheck(
  manager: GroupManager,
  options: GroupsHealthOptions = {},
): GroupsHealthCheck {
  const maxPending = options.maxPending ?? 100;
  const resourcesMs = options.resourcesMs ?? retentionAges({}).resourcesMs;
  const check: GroupsHealthCheck['check'] = async () => {
    const now = manager.clock.now();
    const stuck = await manager.stuck();
    const failed = await manager.list(['failed']);
    const rollbackFailed = await manager.list(['rollback_failed']);
    const orphans = await orphanedResources(manager, resourcesMs);
    const pending = (await manager.list(['pending'])).length;
    const drift = options.drift === undefined ? undefined : (await diff(options.drift)).length;
    const counts: GroupsHealthCounts = {
      stuck: stuck.length,
      failed: failed.length,
      rollbackFailed: rollbackFailed.length,
      orphanedResources: orphans.length,
      pending,
      ...(drift === undefined ? {} : { drift }),
    };
    const failing: string[] = [];
    const warning: string[] = [];
    if (stuck.length > 0)
      failing.push(
        `${String(stuck.length)} stuck group(s) [${stuck.map((g) => `${g.id} (${String(stuckReason(g, now, manager.stuckAfterMs))})`).join(', ')}]`,
      );
    if (rollbackFailed.length > 0)
      failing.push(`${String(rollbackFailed.length)} with failed rollbacks [${ids(rollbackFailed)}]`);
    if (failed.length > 0) warning.push(`${String(failed.length)} failed group(s) [${ids(failed)}]`);
    if (orphans.length > 0)
      warning.push(
        `${String(orphans.length)} orphaned temporary resource(s) [${orphans.map((r) => `${r.groupId}/${r.name}`).join(', ')}]`,
      );
    if (pending > maxPending)
      warning.push(`${String(pending)} pending groups (threshold ${String(maxPending)})`);
    if (drift !== undefined && drift > 0)
      warning.push(`${String(drift)} difference(s) between desired and actual state`);
    const retention = manager.retentionStatus();
    if (retention?.ok === false) warning.push(`the last scheduled cleanup failed: ${retention.error}`);
    const output = [...failing, ...warning].join('; ');
    if (failing.length > 0) return { status: 'fail', observedValue: counts, output };
    if (warning.length > 0) return { status: 'warn', observedValue: counts, output };
    return { status: 'pass', observedValue: counts };
  };
  const recover = async (): Promise<void> => {
    const report = await manager.recover(options);
    const notRecovered = report.actions.filter((a) => a.action === 'failed-again');
    if (notRecovered.length > 0) {
      throw keelError(
        'GROUP_RECOVERY_FAILED',
        `recovery left ${String(notRecovered.length)} group(s) unrecovered: ${notRecovered.map((a) => a.id).join(', ')}`,
        { actions: report.actions },
      );
    }
  };
  return {
    name: options.name ?? 'groups:attention',
    componentType: 'component',
    check,
    recover,
    run: () => check(),
    action: () => recover(),
  };
}
