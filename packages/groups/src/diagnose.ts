import type { GroupRecord, StoredError } from '@keel/store';
import type { Diagnosis, FailureClass, RecoveryStrategy } from './types.js';

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
  'BULKHEAD_FULL',
  'RETRY_BUDGET_EXHAUSTED',
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
  if (STATE.has(error.code)) return 'state';
  // Unknown codes: a transient kind is treated like a network failure, anything else needs a person.
  if (error.kind === 'transient' || error.kind === 'server') return 'network';
  return 'logic';
}

/** network / timeout → retry with backoff; resource → check and retry; state → reset and retry; logic → manual. */
export function strategyFor(failure: FailureClass): RecoveryStrategy {
  switch (failure) {
    case 'network':
    case 'timeout':
      return 'retry-with-backoff';
    case 'resource':
      return 'check-and-retry';
    case 'state':
      return 'reset-and-retry';
    case 'logic':
      return 'manual';
    case 'none':
      return 'reset-and-retry';
  }
}

/** Diagnoses a group from its record alone (no I/O), as of `nowMs`. */
export function diagnoseRecord(group: GroupRecord, nowMs: number): Diagnosis {
  const active = group.status === 'running' || group.status === 'stopping' || group.status === 'rolling_back';
  const stuck = active && (group.leaseExpiresAt === null || group.leaseExpiresAt <= nowMs);
  const errorKind = failureClass(group.lastError);
  let strategy: RecoveryStrategy = 'none';
  if (stuck && group.status === 'stopping' && group.stopMode !== 'rollback') {
    strategy = 'finish-stop';
  } else if (group.status === 'rollback_failed' || (stuck && group.status !== 'running')) {
    strategy = 'continue-rollback';
  } else if (stuck || group.status === 'failed') {
    // A crashed worker without an error is a state problem: reset the interrupted operation and retry.
    strategy = strategyFor(errorKind === 'none' ? 'state' : errorKind);
  }
  const sinceLastActivityMs = Math.max(0, nowMs - group.updatedAt);
  const err = group.lastError;
  const what = err === null ? 'no error recorded' : `last error ${err.code}: ${err.message}`;
  const summary = stuck
    ? `group ${group.id} is ${group.status} but its worker's lease expired ${String(sinceLastActivityMs)} ms after its last activity (${what}); recovery: ${strategy}`
    : `group ${group.id} is ${group.status} (${what}); recovery: ${strategy}`;
  return {
    id: group.id,
    status: group.status,
    stuck,
    lastError: err,
    errorKind,
    sinceLastActivityMs,
    strategy,
    summary,
    recoverAttempts: group.recoverAttempts,
  };
}
