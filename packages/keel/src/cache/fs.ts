import * as nodeFs from 'node:fs/promises';

/**
 * The part of `node:fs/promises` the cache uses. Pass another implementation (for example
 * `faultyFs()` from `keel/chaos`) to inject disk faults.
 */
export interface CacheFs {
  open: typeof nodeFs.open;
  readFile: typeof nodeFs.readFile;
  rename: typeof nodeFs.rename;
  unlink: typeof nodeFs.unlink;
  rm: typeof nodeFs.rm;
  mkdir: typeof nodeFs.mkdir;
  readdir: typeof nodeFs.readdir;
  stat: typeof nodeFs.stat;
  statfs: typeof nodeFs.statfs;
}

/** The real file system. */
export const realFs: CacheFs = nodeFs;
