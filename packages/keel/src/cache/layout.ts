import path from 'node:path';

/** Name of an object's metadata file inside its directory. */
export const META_FILE = 'meta.json';

/** Prefix of slice files: `slice-<index>`. */
export const SLICE_PREFIX = 'slice-';

/** `<dir>/objects`, the root of every object's directory, for a resolved cache directory. */
export function objectsRootOf(dir: string): string {
  const base = dir.endsWith(path.sep) ? dir.slice(0, -1) : dir; // '/' itself
  return `${base}${path.sep}objects`;
}

// Paths are built on every hit: plain concatenation of parts that need no normalising (a
// resolved directory and hex hashes) instead of path.join.

/** Directory of one object: `<objects>/<first two hex digits>/<hash>`. */
export function objectDir(objectsRoot: string, hash: string): string {
  return `${objectsRoot}${path.sep}${hash.slice(0, 2)}${path.sep}${hash}`;
}

/** File of slice `index` of an object. */
export function slicePath(objectsRoot: string, hash: string, index: number): string {
  return `${objectDir(objectsRoot, hash)}${path.sep}${SLICE_PREFIX}${index}`;
}

/** The object's meta.json. */
export function metaPath(objectsRoot: string, hash: string): string {
  return `${objectDir(objectsRoot, hash)}${path.sep}${META_FILE}`;
}
