/** The part of the queue's stats the backlog reads. */
export interface QueueCounts {
  pending: number;
  active: number;
}

/**
 * Which partitions have items this process queued and not yet replayed (or dead-lettered), so new
 * calls of those partitions queue behind them; and whether the queue held items at start, which
 * holds every partition until the queue has been seen empty once.
 */
export class PartitionBacklog {
  /** Per partition: ids of items queued here that are not yet replayed or dead. */
  private readonly ids = new Map<string, Set<string>>();
  private startup = false;
  private enqueuesInFlight = 0;
  private enqueueGeneration = 0;

  /** True until the queue was seen empty when it held items at start. */
  get startupBacklog(): boolean {
    return this.startup;
  }

  /** Partitions with queued items this process knows of. */
  get partitions(): number {
    return this.ids.size;
  }

  /** Notes what the queue held at start: anything makes every partitioned call queue until it drains. */
  observeStart(counts: QueueCounts): void {
    this.startup = counts.pending + counts.active > 0;
  }

  /** Whether a new call of partition `key` must queue behind earlier items. */
  holds(key: string): boolean {
    return this.startup || this.ids.has(key);
  }

  /** Call before an enqueue starts, so a count of the queue taken meanwhile is not trusted. */
  enqueueStarted(): void {
    this.enqueuesInFlight++;
    this.enqueueGeneration++;
  }

  /** Call when an enqueue has ended, whether it committed or failed. */
  enqueueEnded(): void {
    this.enqueuesInFlight--;
  }

  /** Records a committed enqueue of partition `key`. */
  queued(key: string, item: { id: number | string; duplicate: boolean }): void {
    const ids = this.ids.get(key) ?? new Set<string>();
    // A duplicate's first item may be done already; it holds the partition only if still queued here.
    if (!item.duplicate) ids.add(String(item.id));
    if (ids.size > 0) this.ids.set(key, ids);
  }

  /** Releases an item that was replayed or became a dead letter. */
  settled(partitionKey: string | null, id: number | string): void {
    if (partitionKey === null) return;
    const ids = this.ids.get(partitionKey);
    if (!ids) return;
    ids.delete(String(id));
    if (ids.size === 0) this.ids.delete(partitionKey);
  }

  /**
   * Forgets every backlog when `count` finds the queue empty. Rejects with `count`'s error (the
   * backlog is then kept).
   */
  async forgetIfDrained(count: () => QueueCounts | Promise<QueueCounts>): Promise<void> {
    if (!this.startup && this.ids.size === 0) return;
    const generation = this.enqueueGeneration;
    const s = await count();
    // Forget the backlog only if no enqueue ran meanwhile: a count taken before a commit is stale.
    if (s.pending + s.active === 0 && this.enqueuesInFlight === 0 && generation === this.enqueueGeneration) {
      this.startup = false;
      this.ids.clear();
    }
  }
}
