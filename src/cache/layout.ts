/** Name of an object's metadata file inside its directory. */
export const META_FILE = 'meta.json';

/** Prefix of slice files: `slice-<index>`. */
export const SLICE_PREFIX = 'slice-';
