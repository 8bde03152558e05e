import { randomBytes } from 'node:crypto';
import type { CacheFs } from './fs.js';
import { processAlive } from './file-lock.js';

/** Suffix marker of files being written; such files are never read and are cleaned up if left over. */
export const TMP_MARKER = '.tmp-';

/** `<path>.tmp-<pid>-<random>`: the writer's process id tells cleanup whether it may still be writing. */
function tmpPathOf(path: string): string {
  return `${path}${TMP_MARKER}${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * True when the temporary file `name` is being written by another process that still runs on
 * this host (its name carries the writer's pid): cleanup leaves it alone. Files of this process
 * are judged by its in-flight set instead; names without a pid are leftovers.
 */
export function writtenByOtherProcess(name: string): boolean {
  const at = name.lastIndexOf(TMP_MARKER);
  if (at < 0) return false;
  const m = /^(\d+)-/.exec(name.slice(at + TMP_MARKER.length));
  const pid = m ? Number(m[1]) : 0;
  return pid !== 0 && pid !== process.pid && processAlive(pid);
}

/**
 * Writes `data` to a new temporary file beside `path` and fsyncs it; answers its name, for the
 * caller to rename into place (or remove) and then delete from `inFlight`. On failure the
 * temporary file is removed and dropped from `inFlight`.
 */
export async function writeTmpFile(
  fs: CacheFs,
  path: string,
  data: Uint8Array,
  inFlight: Set<string>,
): Promise<string> {
  const tmp = tmpPathOf(path);
  inFlight.add(tmp);
  try {
    const handle = await fs.open(tmp, 'w');
    try {
      await handle.write(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return tmp;
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    inFlight.delete(tmp);
    throw err;
  }
}

/**
 * Writes `data` to `path` so that a reader sees the old file or the whole new one, never a part:
 * to `<path>.tmp-<pid>-<random>`, fsync, rename. On failure the temporary file is removed.
 * `inFlight` holds the temporary path while it exists, so cleanup leaves it alone.
 */
export async function writeFileAtomic(
  fs: CacheFs,
  path: string,
  data: Uint8Array,
  inFlight: Set<string>,
): Promise<void> {
  const tmp = await writeTmpFile(fs, path, data, inFlight);
  try {
    await fs.rename(tmp, path);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  } finally {
    inFlight.delete(tmp);
  }
}
