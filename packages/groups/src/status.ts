import { keelError } from 'keel';
import type { GroupStatus } from '@keel/store';

/** Statuses from which a group never moves on its own. */
export const TERMINAL_STATUSES: readonly GroupStatus[] = [
  'completed',
  'stopped',
  'rolled_back',
  'rollback_failed',
  'failed',
];

/** Statuses in which a process should hold the group's lease and be working on it. */
export const ACTIVE_STATUSES: readonly GroupStatus[] = ['running', 'stopping', 'rolling_back'];

/**
 * The allowed transitions. `completed` and `stopped` may still be rolled back on request;
 * `failed` and `rollback_failed` may be retried by recovery; `rolled_back` is final.
 */
export const TRANSITIONS: Readonly<Record<GroupStatus, readonly GroupStatus[]>> = {
  pending: ['running', 'paused', 'stopped', 'rolled_back'],
  running: ['paused', 'stopping', 'completed', 'failed', 'rolling_back', 'running'],
  paused: ['running', 'pending', 'stopping', 'stopped', 'rolling_back'],
  stopping: ['stopped', 'rolling_back', 'stopping'],
  stopped: ['rolling_back'],
  completed: ['rolling_back'],
  failed: ['running', 'rolling_back'],
  rolling_back: ['rolled_back', 'rollback_failed', 'rolling_back'],
  rolled_back: [],
  rollback_failed: ['rolling_back'],
};

/** Whether `from → to` is allowed. */
export function canTransition(from: GroupStatus, to: GroupStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Statuses from which `to` can be reached. */
export function sourcesOf(to: GroupStatus): GroupStatus[] {
  return (Object.keys(TRANSITIONS) as GroupStatus[]).filter((from) => canTransition(from, to));
}

/** Throws GROUP_INVALID_TRANSITION (a client error) when `from → to` is not allowed. */
export function assertTransition(id: string, from: GroupStatus, to: GroupStatus): void {
  if (!canTransition(from, to)) {
    throw keelError(
      'GROUP_INVALID_TRANSITION',
      `group ${id} cannot go from ${from} to ${to}; allowed from ${from}: ${TRANSITIONS[from].join(', ') || 'none (final)'}`,
      { groupId: id, from, to },
      { kind: 'client', httpStatus: 409, stack: false },
    );
  }
}
