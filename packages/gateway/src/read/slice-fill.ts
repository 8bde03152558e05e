import { classify, keelError, type KeelError } from 'keel';

/**
 * An abandoned fill with at most this share of its bytes still to come is finished (and cached)
 * rather than cancelled: the rest costs less than fetching the slice again later.
 */
export const FINISH_ABANDONED_SHARE = 0.25;

/**
 * One origin fetch of one slice, shared by every request that needs it (single flight). Bytes
 * are copied as they arrive into one buffer of the slice's length, so each reader streams them at
 * once, from its own offset, and the cache write takes the same buffer without another copy.
 *
 * Readers that stream the slice (or read ahead to it) hold it ({@link retain}); when the last one
 * lets go ({@link release}) before every byte arrived, the fetch is cancelled, unless at most
 * {@link FINISH_ABANDONED_SHARE} of it is still to come.
 */
export class SliceFill {
  private buffer: Buffer | undefined;
  private received = 0;
  private state: 'filling' | 'done' | 'failed' = 'filling';
  private failure: KeelError | undefined;
  private wake: (() => void)[] = [];
  private openedResolve!: () => void;
  private openedReject!: (e: KeelError) => void;
  private holders = 0;
  private readonly controller = new AbortController();
  /** Settles when the origin answered (resolves) or failed before answering (rejects). */
  readonly opened: Promise<void>;
  /** Aborted when every reader went away before the fetch was (nearly) done. */
  readonly signal: AbortSignal = this.controller.signal;

  /**
   * @param start absolute offset of the slice's first byte
   * @param length bytes in the slice
   */
  constructor(
    readonly start: number,
    readonly length: number,
  ) {
    this.opened = new Promise((resolve, reject) => {
      this.openedResolve = resolve;
      this.openedReject = reject;
    });
    this.opened.catch(() => undefined);
  }

  /** Every byte of the slice has arrived (only its cache write may still be under way). */
  get complete(): boolean {
    return this.state === 'done';
  }

  /** Still fetching: neither complete nor failed. */
  get filling(): boolean {
    return this.state === 'filling';
  }

  /** Bytes arrived so far. */
  get receivedBytes(): number {
    return this.received;
  }

  /** A reader needs this fill (streams it, or reads ahead to it). */
  retain(): void {
    this.holders++;
  }

  /**
   * A reader no longer needs this fill. When none is left and bytes are still to come, the fetch
   * is cancelled (readers joining later fetch anew), unless it is nearly done.
   */
  release(): void {
    this.holders = Math.max(0, this.holders - 1);
    if (this.holders > 0 || this.state !== 'filling') return;
    if (this.length - this.received <= this.length * FINISH_ABANDONED_SHARE) return;
    const reason = keelError(
      'ABORTED',
      'every reader of this slice went away; its origin fetch is cancelled',
    );
    this.controller.abort(reason);
    this.fail(reason);
  }

  /** The origin answered; bytes follow. */
  markOpened(): void {
    this.openedResolve();
  }

  /** Takes the next bytes of the slice (beyond its length, they are dropped). */
  push(chunk: Buffer): void {
    if (this.state !== 'filling') return;
    this.buffer ??= Buffer.allocUnsafe(this.length);
    const n = Math.min(chunk.length, this.length - this.received);
    chunk.copy(this.buffer, this.received, 0, n);
    this.received += n;
    this.notify();
  }

  finish(): void {
    if (this.state !== 'filling') return;
    this.state = 'done';
    this.notify();
  }

  fail(err: unknown): void {
    if (this.state !== 'filling') return;
    this.failure = classify(err);
    this.state = 'failed';
    // Readers still streaming what arrived keep their views; the memory goes with the last.
    this.openedReject(this.failure);
    this.notify();
  }

  /** Why the fill failed, once it has. */
  get error(): KeelError | undefined {
    return this.failure;
  }

  /** Every byte of the slice, once complete (the fill's own buffer: not to be modified). */
  bytes(): Buffer {
    return this.received === 0 || !this.buffer ? Buffer.alloc(0) : this.buffer.subarray(0, this.received);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = [];
    for (const fn of w) fn();
  }

  /**
   * Bytes `from..to` (absolute, inclusive) as they arrive. On a failed fill it throws a
   * {@link SliceReadError} carrying the absolute offset reached, so the reader can continue elsewhere.
   */
  async *read(from: number, to: number): AsyncGenerator<Buffer> {
    let pos = from - this.start;
    const end = to - this.start + 1;
    while (pos < end) {
      if (this.received > pos && this.buffer) {
        const piece = this.buffer.subarray(pos, Math.min(this.received, end));
        pos += piece.length;
        yield piece;
        continue;
      }
      if (this.state === 'failed') throw new SliceReadError(this.start + pos, this.failure as KeelError);
      if (this.state === 'done')
        throw new SliceReadError(this.start + pos, classify(new Error('slice ended early')));
      await new Promise<void>((resolve) => this.wake.push(resolve));
    }
  }
}

/** A shared fill failed; `offset` is the absolute position the reader had reached. */
export class SliceReadError extends Error {
  constructor(
    readonly offset: number,
    readonly error: KeelError,
  ) {
    super(error.message);
  }
}
