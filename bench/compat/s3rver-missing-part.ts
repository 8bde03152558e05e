/**
 * CompleteMultipartUpload naming a part that was never uploaded: S3 answers 400 InvalidPart;
 * s3rver 3 opens the missing part file in a stream nobody listens to for errors, so the ENOENT is
 * thrown outside the request (it ends the process unless something catches it) and the request
 * never gets an answer: the client waits for its read timeout and retries, and the suite's
 * `test_multipart_upload_missing_part` spends minutes in each run. Checking the parts of an upload
 * in progress first makes s3rver answer as S3 does; nothing else changes.
 */
import { access } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putObjectMultipart: (
    this: FilesystemStore,
    bucket: string,
    uploadId: string,
    parts: { number: number; etag: string }[],
  ) => Promise<unknown>;
}
type S3ErrorClass = new (code: string, message: string, detail?: Record<string, string | number>) => Error;

let applied = false;

const exists = (file: string): Promise<boolean> =>
  access(file).then(
    () => true,
    () => false,
  );

/** Makes s3rver refuse a CompleteMultipartUpload that names a missing part with 400 InvalidPart. Applied once per process. */
export function refuseMissingParts(): void {
  if (applied) return;
  applied = true;
  const require = createRequire(import.meta.url);
  const Store = require('s3rver/lib/stores/filesystem') as { prototype: FilesystemStore };
  const S3Error = require('s3rver/lib/models/error') as S3ErrorClass;
  const putObjectMultipart = Store.prototype.putObjectMultipart;
  Store.prototype.putObjectMultipart = async function (this: FilesystemStore, bucket, uploadId, parts) {
    const uploadDir = path.join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId);
    // An upload that does not exist (or was completed already) is left to s3rver, which answers 500.
    if (!(await exists(uploadDir))) return putObjectMultipart.call(this, bucket, uploadId, parts);
    for (const part of parts) {
      if (!(await exists(path.join(uploadDir, String(part.number)))))
        throw new S3Error(
          'InvalidPart',
          'One or more of the specified parts could not be found. The part might not have been ' +
            "uploaded, or the specified entity tag might not have matched the part's entity tag.",
          { UploadId: uploadId, PartNumber: part.number },
        );
    }
    return putObjectMultipart.call(this, bucket, uploadId, parts);
  };
}
