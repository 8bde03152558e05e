import { classify, keelError } from 'keel';
import type { GroupRecord, GroupStatus, StoredError } from '@keel/store';
import { diagnoseRecord } from './diagnose.js';
import { GroupFailedError } from './group-failed-error.js';
import type { GroupRun } from './group-run.js';
import type { GroupManager } from './manager.js';
import type { Diagnosis, FailureClass, RecoveryAction, RecoveryReport, RunOutcome } from './types.js';

/** Options of {@link recoverGroups}. */
export interface RecoverOptions {
  /** Recovery attempts per group before it is left for a person (default 3). */
  maxAttempts?: number;
  /** Wait before retrying a group that failed on a network or timeout error, times the attempt number (default 1000 ms). */
  backoffMs?: number;
  /** For `check-and-retry`: resolves true when the resource is back (default: always true). */
  checkResource?: (failure: FailureClass, groupId: string) => Promise<boolean>;
  /**
   * For `check-cluster-and-retry` (a `cluster` failure: no quorum, no leader, a node out): resolves
   * true when the cluster is healthy again (default: always true). A group is retried only then.
   */
  checkCluster?: (groupId: string) => Promise<boolean>;
}

/**
 * @internal Takes a stuck group away from whoever runs it (see `GroupManager.takeOverFrom`). A
 * run of this process is stopped and awaited; another process's lease is taken over by
 * compare-and-set on its holder, and that process stops at its next heartbeat.
 */
export async function takeOver(
  manager: GroupManager,
  local: { run: GroupRun; done: Promise<void> } | undefined,
  group: GroupRecord,
  reason: string,
): Promise<void> {
  const id = group.id;
  if (local !== undefined) {
    local.run.lose(
      keelError('GROUP_LEASE_LOST', `group ${id} was taken over by recovery: ${reason}`, { groupId: id }),
    );
    await local.done;
    await manager.log(id, 'warn', `${manager.owner} stopped its own run for recovery: ${reason}`);
    return;
  }
  // Compare-and-set on the holder, whether its lease looks expired or not: the record may be older
  // than a heartbeat that renewed it meanwhile.
  const holder = group.leaseOwner;
  if (holder === null || holder === manager.owner) return;
  const until = manager.clock.now() + manager.leaseMs;
  if (!(await manager.repository.takeOverLease(id, manager.owner, holder, until))) {
    throw keelError(
      'GROUP_LEASED',
      `group ${id} changed hands while recovery took it over from ${holder}; recover again`,
      { groupId: id },
      { kind: 'client', httpStatus: 409, stack: false },
    );
  }
  await manager.log(id, 'warn', `${manager.owner} took the group over from ${holder}: ${reason}`);
}

/** The error recorded on a stuck group that recovery rolls back. */
function stuckError(d: Diagnosis): StoredError {
  return { code: 'GROUP_STUCK', kind: 'transient', message: d.summary, retryable: true };
}

/** Waits, or checks, before a retry; resolves with a reason to skip the group this time, or undefined. */
async function prepare(
  manager: GroupManager,
  group: GroupRecord,
  d: Diagnosis,
  options: RecoverOptions,
): Promise<string | undefined> {
  const backoffMs = options.backoffMs ?? 1000;
  if (d.strategy === 'retry-with-backoff' && backoffMs > 0) {
    await manager.clock.sleep(backoffMs * (group.recoverAttempts + 1));
  } else if (d.strategy === 'check-and-retry' && options.checkResource !== undefined) {
    if (!(await options.checkResource(d.errorKind, group.id))) return 'the resource check still fails';
  } else if (d.strategy === 'check-cluster-and-retry' && options.checkCluster !== undefined) {
    if (!(await options.checkCluster(group.id))) return 'the cluster is still unhealthy';
  }
  return undefined;
}

/** Carries out a diagnosis's strategy on one group (already prepared). */
async function apply(manager: GroupManager, group: GroupRecord, d: Diagnosis): Promise<RunOutcome> {
  if (d.stuck !== false) await manager.takeOverFrom(group, d.summary);
  if (group.status === 'failed') {
    await manager.transition(group.id, 'running');
  } else if (group.status === 'rollback_failed') {
    await manager.transition(group.id, 'rolling_back');
  } else if (d.strategy === 'roll-back') {
    await manager.transition(group.id, 'rolling_back', { lastError: stuckError(d) });
    await manager.log(group.id, 'warn', `rolling back a stuck group: ${d.summary}`);
  }
  // Stuck and retried: the interrupted operations run again (executors are idempotent).
  return manager.drive(group.id);
}

/**
 * Runs a recovery strategy for every stuck and failed group (and every group whose rollback
 * failed), at most `maxAttempts` times per group, and reports what it did. A group stuck without
 * progress is first taken from the worker that holds it (its operation's signal aborts).
 */
export async function recoverGroups(
  manager: GroupManager,
  options: RecoverOptions = {},
): Promise<RecoveryReport> {
  const maxAttempts = options.maxAttempts ?? 3;
  const now = manager.clock.now();
  const candidates = [...(await manager.stuck()), ...(await manager.list(['failed', 'rollback_failed']))];
  const actions: RecoveryAction[] = [];
  for (const group of candidates) {
    const diagnosis = diagnoseRecord(group, now, manager.stuckAfterMs);
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
      const skip = await prepare(manager, group, diagnosis, options);
      if (skip !== undefined) {
        actions.push({ id: group.id, action: 'skipped', strategy, reason: skip });
        continue;
      }
      const outcome = await apply(manager, group, diagnosis);
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
