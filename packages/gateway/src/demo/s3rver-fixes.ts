import { createRequire } from 'node:module';
import { addListObjectVersions } from './s3rver-list-versions.js';
import { fixMultipartUploads } from './s3rver-multipart.js';

interface S3rverObject {
  content: { destroy(): void } | null;
  range?: { start: number; end: number };
}
interface FilesystemStore {
  getObject: (
    this: FilesystemStore,
    bucket: string,
    key: string,
    options?: { start?: number; end?: number },
  ) => Promise<S3rverObject | null>;
  getMetadata(bucket: string, key: string): Promise<Record<string, unknown>>;
}

let applied = false;

/**
 * Makes s3rver (the demo's and the tests' origin) answer as S3 does where s3rver 3 does not, and
 * never say what S3 would not:
 * - a range of an empty object: 416 InvalidRange (s3rver announces one byte and never sends it,
 *   so the request hangs);
 * - multipart uploads: a missing part, a part out of order, an unknown upload (see
 *   {@link fixMultipartUploads}; a missing part made s3rver crash);
 * - ListObjectVersions, which s3rver refuses with 405: answered as for a bucket without versioning
 *   (see {@link addListObjectVersions}).
 * Applied once per process; affects only s3rver.
 */
export function fixS3rver(): void {
  if (applied) return;
  applied = true;
  answerEmptyRanges();
  fixMultipartUploads();
  addListObjectVersions();
}

/** A range of an empty object: 416 InvalidRange, as S3 answers. */
function answerEmptyRanges(): void {
  const require = createRequire(import.meta.url);
  const Store = require('s3rver/lib/stores/filesystem') as { prototype: FilesystemStore };
  const getObject = Store.prototype.getObject;
  Store.prototype.getObject = async function (this: FilesystemStore, bucket, key, options) {
    const ranged = options !== undefined && (options.start !== undefined || options.end !== undefined);
    if (!ranged) return getObject.call(this, bucket, key, options);
    const metadata = await this.getMetadata(bucket, key).catch(() => undefined);
    if (metadata === undefined || Number(metadata['content-length']) !== 0)
      return getObject.call(this, bucket, key, options);
    const object = await getObject.call(this, bucket, key, undefined);
    if (!object) return object;
    object.content?.destroy();
    object.content = null; // with a range set, s3rver answers InvalidRange
    object.range = { start: options.start ?? 0, end: options.end ?? 0 };
    return object;
  };
}
