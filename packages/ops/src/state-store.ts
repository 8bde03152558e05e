import { readFile, rename, rm, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fixFileMode, privateDir, PRIVATE_FILE_MODE } from './private-files.js';

/**
 * A small JSON document on disk that survives restarts (alert history, recovery attempts).
 * Writes go to a `.tmp` file that is fsynced and renamed, so a crash leaves the old or the new
 * document, never half of one; saves coalesce (one write in flight, the latest state wins).
 * The file is private: written 0600 in directories created 0700, and one found readable by other
 * users when it is loaded is made 0600, with a process warning (`KEEL_FILE_MODE_FIXED`).
 */
export class JsonStateFile<T> {
  private writing: Promise<void> | undefined;
  private pending: T | undefined;
  private hasPending = false;

  constructor(readonly path: string) {}

  /** Reads the document; `undefined` when the file is missing or not valid JSON (a fresh start). */
  async load(): Promise<T | undefined> {
    await fixFileMode(this.path);
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      return undefined;
    }
  }

  /** Checks at start-up that the directory can be created and written; throws naming `setting`. */
  async assertWritable(setting: string): Promise<void> {
    try {
      await privateDir(dirname(this.path));
      const handle = await open(`${this.path}.probe`, 'w', PRIVATE_FILE_MODE);
      await handle.close();
      await rm(`${this.path}.probe`, { force: true });
    } catch (err) {
      throw new Error(`${setting}: cannot write ${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Saves `value` (coalesced with other saves); resolves when it is on disk. */
  save(value: T): Promise<void> {
    this.pending = value;
    this.hasPending = true;
    if (!this.writing) this.writing = this.drain();
    return this.writing;
  }

  /** Resolves when no save is in flight. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async drain(): Promise<void> {
    try {
      while (this.hasPending) {
        const value = this.pending;
        this.hasPending = false;
        await privateDir(dirname(this.path));
        const tmp = `${this.path}.tmp`;
        // A .tmp left by a crash keeps its old mode when reopened: remove it first.
        await rm(tmp, { force: true });
        const handle = await open(tmp, 'wx', PRIVATE_FILE_MODE);
        try {
          await handle.writeFile(JSON.stringify(value));
          await handle.sync();
        } finally {
          await handle.close();
        }
        await rename(tmp, this.path);
      }
    } finally {
      this.writing = undefined;
    }
  }
}
