import type { KeelError } from 'keel';
import type { GroupStatus } from '@keel/store';

/**
 * Thrown to the caller of a run when an operation failed: every error, forward and rollback,
 * in `errors`; `status` says how the group ended (`rolled_back`, `rollback_failed` or `failed`).
 */
export class GroupFailedError extends AggregateError {
  readonly isGroupFailedError = true as const;
  readonly code = 'GROUP_FAILED';
  declare readonly errors: KeelError[];
  constructor(
    readonly groupId: string,
    readonly status: GroupStatus,
    errors: KeelError[],
  ) {
    const first = errors[0];
    super(
      errors,
      `group ${groupId} ended ${status} after ${String(errors.length)} error${errors.length === 1 ? '' : 's'}` +
        (first === undefined ? '' : `; first: ${first.code}: ${first.message}`),
    );
    this.name = 'GroupFailedError';
  }
}
