import { randomUUID } from 'node:crypto';
import type { Backoff, Clock } from 'keel';
import { SqliteQueueStore, type EnqueueResult, type NewQueueRow, type QueueStore } from '@keel/store';

/** Items moved from the spool to the primary store per transaction. */
const MOVE_BATCH = 500;

/**
 * A local SQLite spool in front of a PostgreSQL queue store: while PostgreSQL is unreachable,
 * enqueues are committed to the spool (durably, synchronous=FULL) instead of failing, and a mover
 * hands them to PostgreSQL, oldest first, once it answers. While the spool holds anything, new
 * enqueues go to it too, so order per partition is kept. Every item carries an idempotency key
 * (a generated `keel-spool:<uuid>` when the caller gave none), so an item whose first commit to
 * PostgreSQL had an unknown outcome, or a move interrupted by a crash, is stored once.
 */
export class OutageSpool {
  private active = false;
  private moving: Promise<void> | undefined;
  private closed = false;

  private constructor(
    private readonly local: SqliteQueueStore,
    private readonly primary: QueueStore,
    private readonly name: string,
    private readonly clock: Clock,
    private readonly backoff: Backoff,
    private readonly onMoved: () => void,
  ) {}

  /** Opens the spool file; items left from a previous run are moved as soon as PostgreSQL answers. */
  static open(
    file: string,
    primary: QueueStore,
    name: string,
    clock: Clock,
    backoff: Backoff,
    onMoved: () => void,
  ): OutageSpool {
    const spool = new OutageSpool(new SqliteQueueStore(file), primary, name, clock, backoff, onMoved);
    if (spool.local.pendingCountSync(name) > 0) spool.activate();
    return spool;
  }

  /** True while the spool holds items: enqueues must go to it to keep their order. */
  get holding(): boolean {
    return this.active;
  }

  /** Items waiting in the spool. */
  count(): number {
    return this.local.pendingCountSync(this.name);
  }

  /** Gives every row an idempotency key, so a retried hand-over cannot store it twice. */
  static keyed(row: NewQueueRow): NewQueueRow {
    return row.idempotencyKey === undefined ? { ...row, idempotencyKey: `keel-spool:${randomUUID()}` } : row;
  }

  /** Commits rows to the spool and starts the mover. */
  async write(rows: readonly NewQueueRow[]): Promise<EnqueueResult[]> {
    const results = await this.local.enqueue(this.name, rows, this.clock.now());
    this.activate();
    return results;
  }

  private activate(): void {
    this.active = true;
    this.moving ??= this.move().finally(() => {
      this.moving = undefined;
    });
  }

  private async move(): Promise<void> {
    let backoff = this.backoff;
    while (!this.closed) {
      // Checked synchronously: no enqueue can slip into the spool between this check and the switch.
      if (this.local.pendingCountSync(this.name) === 0) {
        this.active = false;
        return;
      }
      const rows = await this.local.list(this.name, 'pending', MOVE_BATCH);
      try {
        await this.primary.enqueue(
          this.name,
          rows.map((r) => ({
            payload: r.payload,
            correlationId: r.correlationId ?? undefined,
            partitionKey: r.partitionKey ?? undefined,
            idempotencyKey: r.idempotencyKey ?? undefined,
            priority: r.priority,
            maxAttempts: r.maxAttempts,
            runAt: r.runAt,
          })),
          this.clock.now(),
        );
        await this.local.remove(rows.map((r) => r.id));
        backoff = this.backoff;
        this.onMoved();
      } catch {
        // Unavailable (or refused): keep the items and try again later rather than lose them.
        const step = backoff.next();
        backoff = step.next;
        await this.clock.sleep(step.delayMs);
      }
    }
  }

  /** Stops the mover (items stay in the spool for the next start) and closes the file. */
  async close(): Promise<void> {
    this.closed = true;
    await this.moving;
    await this.local.close();
  }
}
