import { classify, keelError } from 'keel';
import type { GroupStatus } from '@keel/store';
import { diagnoseRecord } from './diagnose.js';
import { GroupFailedError } from './group-failed-error.js';
import type { GroupManager } from './manager.js';
import type { FailureClass, RecoveryAction, RecoveryReport } from './types.js';

/** Options of {@link recoverGroups}. */
export interface RecoverOptions {
  /** Recovery attempts per group before it is left for a person (default 3). */
  maxAttempts?: number;
  /** Wait before retrying a group that failed on a network or timeout error, times the attempt number (default 1000 ms). */
  backoffMs?: number;
  /** For `check-and-retry`: resolves true when the resource is back (default: always true). */
  checkResource?: (failure: FailureClass, groupId: string) => Promise<boolean>;
}

/**
 * Runs a recovery strategy for every stuck and failed group (and every group whose rollback
 * failed), at most `maxAttempts` times per group, and reports what it did.
 */
export async function recoverGroups(
  manager: GroupManager,
  options: RecoverOptions = {},
): Promise<RecoveryReport> {
  const maxAttempts = options.maxAttempts ?? 3;
  const backoffMs = options.backoffMs ?? 1000;
  const now = manager.clock.now();
  const candidates = [...(await manager.stuck()), ...(await manager.list(['failed', 'rollback_failed']))];
  const actions: RecoveryAction[] = [];
  for (const group of candidates) {
    const diagnosis = diagnoseRecord(group, now);
    const { strategy } = diagnosis;
    if (strategy === 'manual' || strategy === 'none') {
      actions.push({ id: group.id, action: 'skipped', strategy, reason: diagnosis.summary });
      continue;
    }
    if (group.recoverAttempts >= maxAttempts) {
      actions.push({
        id: group.id,
        action: 'skipped',
        strategy,
        reason: `gave up after ${String(group.recoverAttempts)} recovery attempts; needs a person: ${diagnosis.summary}`,
      });
      continue;
    }
    await manager.repository.updateGroup(group.id, { recoverAttempts: group.recoverAttempts + 1 });
    try {
      if (strategy === 'retry-with-backoff' && backoffMs > 0) {
        await manager.clock.sleep(backoffMs * (group.recoverAttempts + 1));
      } else if (strategy === 'check-and-retry' && options.checkResource !== undefined) {
        if (!(await options.checkResource(diagnosis.errorKind, group.id))) {
          actions.push({
            id: group.id,
            action: 'skipped',
            strategy,
            reason: 'the resource check still fails',
          });
          continue;
        }
      }
      let outcome;
      if (group.status === 'failed') {
        await manager.transition(group.id, 'running');
        outcome = await manager.drive(group.id);
      } else if (group.status === 'rollback_failed') {
        await manager.transition(group.id, 'rolling_back');
        outcome = await manager.drive(group.id);
      } else {
        // Stuck: take over the expired lease; interrupted operations run again (executors are idempotent).
        outcome = await manager.drive(group.id);
      }
      actions.push({ id: group.id, action: 'recovered', strategy, status: outcome.status });
    } catch (err) {
      const status: GroupStatus =
        err instanceof GroupFailedError
          ? err.status
          : ((await manager.get(group.id))?.status ?? group.status);
      const error = err instanceof GroupFailedError ? classify(err.errors[0] ?? err) : classify(err);
      if (err instanceof GroupFailedError && status === 'rolled_back') {
        // The retry failed again but the rollback cleaned up: recovered to a consistent state.
        actions.push({ id: group.id, action: 'recovered', strategy, status });
      } else {
        actions.push({ id: group.id, action: 'failed-again', strategy, status, error });
      }
    }
  }
  return { examined: candidates.length, actions };
}

/** Retention by age, per status, in ms. */
export interface RetentionOptions {
  /** failed, rolled_back, rollback_failed (default 24 h). */
  failedMs?: number;
  /** completed and stopped (default 7 days). */
  completedMs?: number;
  /** log lines of any group (default 30 days). */
  logsMs?: number;
}

/** What {@link cleanupGroups} removed. */
export interface RetentionReport {
  groupsDeleted: Partial<Record<GroupStatus, number>>;
  logsDeleted: number;
}

/** Deletes finished groups and old log lines by age (defaults: failed 24 h, completed 7 days, logs 30 days). */
export async function cleanupGroups(
  manager: GroupManager,
  options: RetentionOptions = {},
): Promise<RetentionReport> {
  const now = manager.clock.now();
  const failedMs = options.failedMs ?? 24 * 3_600_000;
  const completedMs = options.completedMs ?? 7 * 24 * 3_600_000;
  const logsMs = options.logsMs ?? 30 * 24 * 3_600_000;
  for (const v of [failedMs, completedMs, logsMs]) {
    if (!Number.isFinite(v) || v < 0)
      throw keelError('INVALID_CONFIG', `retention ages must be ≥ 0 ms, got ${String(v)}`);
  }
  const plan: [GroupStatus, number][] = [
    ['failed', failedMs],
    ['rolled_back', failedMs],
    ['rollback_failed', failedMs],
    ['completed', completedMs],
    ['stopped', completedMs],
  ];
  const groupsDeleted: Partial<Record<GroupStatus, number>> = {};
  for (const [status, age] of plan) {
    const n = await manager.repository.deleteGroups(status, now - age);
    if (n > 0) groupsDeleted[status] = n;
  }
  const logsDeleted = await manager.repository.deleteLogs(now - logsMs);
  return { groupsDeleted, logsDeleted };
}

/** What the groups health check reports; `observedValue` counts groups needing attention. */
export interface GroupsHealthOutcome {
  status: 'pass' | 'warn' | 'fail';
  observedValue?: number;
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

/**
 * A health check over the groups in a store: `fail` when a group is stuck or its rollback
 * failed, `warn` when a group is `failed`, else `pass` (observed value: groups needing attention).
 * Its `recover()` / `action()` runs {@link recoverGroups} and throws if a group is still not recovered.
 */
export function groupsHealthCheck(
  manager: GroupManager,
  options: RecoverOptions & { name?: string } = {},
): GroupsHealthCheck {
  const check: GroupsHealthCheck['check'] = async () => {
    const stuck = await manager.stuck();
    const failed = await manager.list(['failed']);
    const rollbackFailed = await manager.list(['rollback_failed']);
    const observedValue = stuck.length + failed.length + rollbackFailed.length;
    if (stuck.length > 0 || rollbackFailed.length > 0) {
      return {
        status: 'fail',
        observedValue,
        output: `${String(stuck.length)} stuck group(s) [${stuck.map((g) => g.id).join(', ')}], ${String(rollbackFailed.length)} with failed rollbacks [${rollbackFailed.map((g) => g.id).join(', ')}]`,
      };
    }
    if (failed.length > 0)
      return { status: 'warn', observedValue, output: `${String(failed.length)} failed group(s)` };
    return { status: 'pass', observedValue };
  };
  const recover = async (): Promise<void> => {
    const report = await recoverGroups(manager, options);
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
