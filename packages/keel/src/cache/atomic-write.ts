import { randomBytes } from 'node:crypto';
import type { CacheFs } from './fs.js';

/** Suffix marker of files being written; such files are never read and are cleaned up if left over. */
export const TMP_MARKER = '.tmp-';

/**
 * Writes `data` to `path` so that a reader sees the old file or the whole new one, never a part:
 * to `<path>.tmp-<random>`, fsync, rename. On failure the temporary file is removed.
 * `onTmp` is told the temporary path while it exists, so cleanup can leave it alone.
 */
export async function writeFileAtomic(
  fs: CacheFs,
  path: string,
  data: Uint8Array,
  inFlight: Set<string>,
): Promise<void> {
  const tmp = `${path}${TMP_MARKER}${randomBytes(6).toString('hex')}`;
  inFlight.add(tmp);
  try {
    const handle = await fs.open(tmp, 'w');
    try {
      await handle.write(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  } finally {
    inFlight.delete(tmp);
  }
}
