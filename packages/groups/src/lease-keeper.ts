import { keelError, type Clock, type KeelError, type TimerHandle } from 'keel';
import type { GroupRecord, GroupRepository } from '@keel/store';

/** What a {@link LeaseKeeper} tells the run it keeps alive. */
export interface LeaseEvents {
  /** The lease was taken by another process (or recovery): stop at once, record nothing. */
  lost(reason: KeelError): void;
  /** A heartbeat renewed the lease; `group` is the stored record, read right after (control requests). */
  renewed(group: GroupRecord): void;
}

/**
 * Renews a group's lease every third of `leaseMs` while a process works on it, and reads the
 * group after each renewal so a control request written by another process (a stop with
 * rollback) is seen within a heartbeat. A failed renewal (store unreachable) is retried at the next
 * beat; the lease expires if the store stays away, and the group is then found stuck.
 */
export class LeaseKeeper {
  private timer: TimerHandle | undefined;
  private stopped = false;
  private beating = false;
  private beatAgain = false;

  constructor(
    private readonly repository: GroupRepository,
    private readonly clock: Clock,
    private readonly owner: string,
    private readonly leaseMs: number,
    private readonly groupId: string,
    private readonly events: LeaseEvents,
  ) {}

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  /**
   * The next beat is set when this one fires, not after its writes, so a slow store does not
   * stretch the interval towards the lease's end; a beat that falls due while the previous one is
   * still writing runs right after it (never two at once, none lost).
   */
  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimer(Math.max(1, Math.floor(this.leaseMs / 3)), () => {
      this.schedule();
      if (this.beating) {
        this.beatAgain = true;
        return;
      }
      this.beating = true;
      void (async () => {
        do {
          this.beatAgain = false;
          await this.beat();
        } while (this.beatAgain && !this.stopped);
        this.beating = false;
      })();
    });
  }

  private async beat(): Promise<void> {
    const at = this.clock.now();
    let held: boolean;
    try {
      held = await this.repository.renewLease(this.groupId, this.owner, at, at + this.leaseMs);
    } catch {
      return; // the store is unreachable: the next beat tries again
    }
    if (this.stopped) return;
    if (!held) {
      this.stop();
      this.events.lost(
        keelError(
          'GROUP_LEASE_LOST',
          `${this.owner} lost the lease on group ${this.groupId} to another process; stopping without recording`,
          { groupId: this.groupId },
        ),
      );
      return;
    }
    try {
      const group = await this.repository.getGroup(this.groupId);
      if (group !== undefined && !this.stopped) this.events.renewed(group);
    } catch {
      // Control requests are read again at the next beat.
    }
  }
}
