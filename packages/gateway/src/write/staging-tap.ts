import { createHash, type Hash } from 'node:crypto';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { classify } from 'keel';

/**
 * Passes an upload's bytes on unchanged while hashing them (MD5) and appending them to a staging
 * file. A staging failure (disk full …) never fails the upload: the copy is given up, and the
 * write is forwarded only.
 */
export class StagingTap extends Transform {
  private readonly md5: Hash = createHash('md5');
  private md5Digest: Buffer | undefined;
  bytes = 0;
  /** Every byte passed through, and the stream ended (not cut). */
  private complete = false;
  /** Why the staged copy is unusable, once it is. */
  private failed: string | undefined;
  /** The staging file while open (undefined once closed: {@link opened} opens it again). */
  private handle: Promise<FileHandle | undefined> | undefined;

  constructor(readonly file: string) {
    super();
    this.handle = open(file, 'wx+').catch((err: unknown) => {
      this.failed = `could not create the staging file: ${classify(err).message}`;
      return undefined;
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.md5.update(chunk);
    const at = this.bytes;
    this.bytes += chunk.length;
    void (this.handle ?? Promise.resolve(undefined))
      .then(async (fh) => {
        if (fh && this.failed === undefined) await writeAll(fh, chunk, at);
      })
      .catch((err: unknown) => {
        this.failed = `could not write the staging file: ${classify(err).message}`;
      })
      .finally(() => {
        done(null, chunk);
      });
  }

  override _flush(done: TransformCallback): void {
    this.complete = true;
    done();
  }

  /** Undefined when the body passed whole (`declaredBytes`) and is staged; else why not. */
  async whole(declaredBytes: number): Promise<string | undefined> {
    if (!this.complete || this.bytes !== declaredBytes) return 'the body did not arrive whole';
    return (await this.opened()) ? undefined : (this.failed ?? 'staging failed');
  }

  /** The MD5 of the bytes passed through (once they all have). */
  digest(): Buffer {
    this.md5Digest ??= this.md5.digest();
    return this.md5Digest;
  }

  /** The open staging file (opened again for reading once closed), or undefined when staging failed. */
  async opened(): Promise<FileHandle | undefined> {
    if (this.failed !== undefined) return undefined;
    this.handle ??= open(this.file, 'r').catch((err: unknown) => {
      this.failed = `could not open the staging file again: ${classify(err).message}`;
      return undefined;
    });
    const fh = await this.handle;
    return this.failed === undefined ? fh : undefined;
  }

  /**
   * Closes the staging file, keeping it: a staged part waiting for its upload's completion holds
   * no file descriptor.
   */
  async closeFile(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await (await handle)?.close().catch(() => undefined);
  }

  /** Stops staging, closes and removes the staging file. */
  async remove(): Promise<void> {
    if (!this.destroyed) this.destroy();
    await this.closeFile();
    await rm(this.file, { force: true }).catch(() => undefined);
  }
}

async function writeAll(fh: FileHandle, chunk: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, position + done);
    done += bytesWritten;
  }
}
