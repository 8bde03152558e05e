import type { GroupRecord, StoredError } from '@keel/store';
import { ACTIVE_STATUSES } from './status.js';
import type { Diagnosis, FailureClass, RecoveryStrategy, StuckReason } from './types.js';

/** Default time without progress after which an active group is stuck: 10 minutes. */
export const DEFAULT_STUCK_AFTER_MS = 10 * 60_000;

const NETWORK = new Set([
  'NETWORK_RESET',
  'CONNECTION_REFUSED',
  'NETWORK_UNREACHABLE',
  'DNS_FAILURE',
  'SERVICE_UNAVAILABLE',
  'BAD_GATEWAY',
  'CIRCUIT_OPEN',
  'THROTTLED',
  'RATE_LIMITED',
]);
const TIMEOUT = new Set(['TIMEOUT', 'ABORTED']);
const RESOURCE = new Set([
  'DISK_FULL',
  'IO_ERROR',
  'READ_ONLY_FS',
  'TOO_MANY_OPEN_FILES',
  'RESOURCE_BUSY',
  'RESOURCE_EXHAUSTED',
  'BULKHEAD_FULL',
  'RETRY_BUDGET_EXHAUSTED',
]);
/** A cluster that is not whole: no quorum, no leader, a node out, a rebalance under way. */
const CLUSTER = new Set([
  'CLUSTER_UNHEALTHY',
  'CLUSTER_UNAVAILABLE',
  'NO_QUORUM',
  'NOT_LEADER',
  'LEADER_NOT_AVAILABLE',
  'NODE_UNAVAILABLE',
  'REPLICA_UNAVAILABLE',
  'REBALANCE_IN_PROGRESS',
  'SPLIT_BRAIN',
]);
const STATE = new Set([
  'CONFLICT',
  'PRECONDITION_FAILED',
  'OBJECT_CHANGED',
  'STALE_TOKEN',
  'GROUP_LEASE_LOST',
  'METADATA_CORRUPTED',
  'CHECKSUM_MISMATCH',
]);

/** The failure family of a stored error: decides the recovery strategy. */
export function failureClass(error: StoredError | null): FailureClass {
  if (error === null) return 'none';
  if (NETWORK.has(error.code)) return 'network';
  if (TIMEOUT.has(error.code)) return 'timeout';
  if (RESOURCE.has(error.code)) return 'resource';
  if (CLUSTER.has(error.code)) return 'cluster';
  if (STATE.has(error.code)) return 'state';
  // Unknown codes: a transient kind is treated like a network failure, anything else needs a person.
  if (error.kind === 'transient' || error.kind === 'server') return 'network';
  return 'logic';
}

/**
 * network / timeout → retry with backoff; resource → check and retry; cluster → check the
 * cluster's health, then retry; state → reset and retry; logic → manual.
 */
export function strategyFor(failure: FailureClass): RecoveryStrategy {
  switch (failure) {
    case 'network':
    case 'timeout':
      return 'retry-with-backoff';
    case 'resource':
      return 'check-and-retry';
    case 'cluster':
      return 'check-cluster-and-retry';
    case 'state':
      return 'reset-and-retry';
    case 'logic':
      return 'manual';
    case 'none':
      return 'reset-and-retry';
  }
}

/** Whether (and why) `group` is stuck at `nowMs`: see {@link StuckReason}. */
export function stuckReason(
  group: GroupRecord,
  nowMs: number,
  stuckAfterMs = DEFAULT_STUCK_AFTER_MS,
): false | StuckReason {
  if (!ACTIVE_STATUSES.includes(group.status)) return false;
  if (group.leaseExpiresAt === null || group.leaseExpiresAt <= nowMs) return 'lease-expired';
  if (nowMs - lastProgressAt(group) > stuckAfterMs) return 'no-progress';
  return false;
}

/** When the group last made progress (its last activity for groups stored before progress was tracked). */
export const lastProgressAt = (group: GroupRecord): number => group.progressAt ?? group.updatedAt;

function strategyOf(
  group: GroupRecord,
  stuck: false | StuckReason,
  errorKind: FailureClass,
): RecoveryStrategy {
  if (group.status === 'rollback_failed') return 'continue-rollback';
  if (stuck === false) return group.status === 'failed' ? strategyFor(errorKind) : 'none';
  if (group.onStuck === 'manual') return 'manual';
  if (group.status === 'stopping' && group.stopMode !== 'rollback') return 'finish-stop';
  if (group.status !== 'running') return 'continue-rollback';
  if (group.onStuck === 'rollback') return 'roll-back';
  // A crashed worker without an error is a state problem: reset the interrupted operation and retry.
  return strategyFor(errorKind === 'none' ? 'state' : errorKind);
}

/**
 * Diagnoses a group from its record alone (no I/O), as of `nowMs`; a live worker's group is stuck
 * after `stuckAfterMs` (default 10 min) without progress.
 */
export function diagnoseRecord(
  group: GroupRecord,
  nowMs: number,
  stuckAfterMs = DEFAULT_STUCK_AFTER_MS,
): Diagnosis {
  const stuck = stuckReason(group, nowMs, stuckAfterMs);
  const recorded = failureClass(group.lastError);
  const errorKind: FailureClass = stuck === 'no-progress' && recorded === 'none' ? 'timeout' : recorded;
  const strategy = strategyOf(group, stuck, errorKind);
  const sinceLastActivityMs = Math.max(0, nowMs - group.updatedAt);
  const sinceLastProgressMs = Math.max(0, nowMs - lastProgressAt(group));
  const err = group.lastError;
  const what = err === null ? 'no error recorded' : `last error ${err.code}: ${err.message}`;
  let summary: string;
  if (stuck === 'lease-expired') {
    summary = `group ${group.id} is ${group.status} but its worker's lease expired ${String(sinceLastActivityMs)} ms after its last activity (${what}); recovery: ${strategy}`;
  } else if (stuck === 'no-progress') {
    summary = `group ${group.id} is ${group.status} and its worker holds the lease, but it made no progress for ${String(sinceLastProgressMs)} ms (stuck after ${String(stuckAfterMs)} ms; ${what}); recovery: ${strategy}`;
  } else {
    summary = `group ${group.id} is ${group.status} (${what}); recovery: ${strategy}`;
  }
  return {
    id: group.id,
    status: group.status,
    stuck,
    lastError: err,
    errorKind,
    sinceLastActivityMs,
    sinceLastProgressMs,
    onStuck: group.onStuck,
    strategy,
    summary,
    recoverAttempts: group.recoverAttempts,
  };
}
