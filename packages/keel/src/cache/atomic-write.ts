import { randomBytes } from 'node:crypto';
import type { CacheFs } from './fs.js';
import { LOCK_HOST, processAlive } from './file-lock.js';

/** Suffix marker of files being written; such files are never read and are cleaned up if left over. */
export const TMP_MARKER = '.tmp-';

/**
 * `<path>.tmp-<pid>-<random>@<host>`: the writer's process id and host tell cleanup whether it may
 * still be writing.
 */
function tmpPathOf(path: string): string {
  return `${path}${TMP_MARKER}${process.pid}-${randomBytes(6).toString('hex')}@${LOCK_HOST}`;
}

/**
 * Who writes the temporary file `name`: its pid and host (names from before hosts were named are
 * this host's); undefined for a name that is not a temporary file's or names no pid.
 */
export function tmpOwner(name: string): { pid: number; host: string } | undefined {
  const at = name.lastIndexOf(TMP_MARKER);
  if (at < 0) return undefined;
  const m = /^(\d+)-[0-9a-f]*(?:@([A-Za-z0-9._-]+))?$/.exec(name.slice(at + TMP_MARKER.length));
  return m ? { pid: Number(m[1]), host: m[2] ?? LOCK_HOST } : undefined;
}

/**
 * True when the temporary file `name` is being written by another process that still runs on
 * this host (its name carries the writer's pid): cleanup leaves it alone. Files of this process
 * are judged by its in-flight set instead, another host's by their age (see cleanup.ts); names
 * without a pid are leftovers.
 */
export function writtenByOtherProcess(name: string): boolean {
  const owner = tmpOwner(name);
  if (!owner || owner.host !== LOCK_HOST) return false;
  return owner.pid !== 0 && owner.pid !== process.pid && processAlive(owner.pid);
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
