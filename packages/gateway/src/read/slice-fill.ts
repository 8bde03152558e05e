import { classify, type KeelError } from 'keel';

/**
 * One origin fetch of one slice, shared by every request that needs it (single flight). Bytes
 * are kept as they arrive so each reader streams them at once, from its own offset.
 */
export class SliceFill {
  private readonly chunks: Buffer[] = [];
  private readonly offsets: number[] = [];
  private received = 0;
  private state: 'filling' | 'done' | 'failed' = 'filling';
  private failure: KeelError | undefined;
  private wake: (() => void)[] = [];
  private openedResolve!: () => void;
  private openedReject!: (e: KeelError) => void;
  /** Settles when the origin answered (resolves) or failed before answering (rejects). */
  readonly opened: Promise<void>;

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

  /** The origin answered; bytes follow. */
  markOpened(): void {
    this.openedResolve();
  }

  push(chunk: Buffer): void {
    this.offsets.push(this.received);
    this.chunks.push(chunk);
    this.received += chunk.length;
    this.notify();
  }

  finish(): void {
    this.state = 'done';
    this.notify();
  }

  fail(err: unknown): void {
    this.failure = classify(err);
    this.state = 'failed';
    this.openedReject(this.failure);
    this.notify();
  }

  /** Every byte of the slice, once complete. */
  bytes(): Buffer {
    return Buffer.concat(this.chunks, this.received);
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
    let chunk = 0;
    while (pos < end) {
      if (this.received > pos) {
        while (chunk + 1 < this.offsets.length && (this.offsets[chunk + 1] as number) <= pos) chunk++;
        const base = this.offsets[chunk] as number;
        const buf = this.chunks[chunk] as Buffer;
        const piece = buf.subarray(pos - base, Math.min(buf.length, end - base));
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
