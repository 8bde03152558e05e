import { access, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

interface CompletedPart {
  number: number;
  /** Without quotes: s3rver strips them before it calls the store. */
  etag: string;
}
interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putPart: (
    this: FilesystemStore,
    bucket: string,
    uploadId: string,
    partNumber: string,
    content: unknown,
  ) => Promise<{ size: number; md5: string }>;
  putObjectMultipart: (
    this: FilesystemStore,
    bucket: string,
    uploadId: string,
    parts: CompletedPart[],
  ) => Promise<unknown>;
}
type S3ErrorClass = new (code: string, message: string, detail?: Record<string, string | number>) => Error;

/** s3rver's upload ids: 16 random bytes in hex. Anything else names no upload (nor any path). */
const UPLOAD_ID = /^[0-9a-f]{32}$/;

/**
 * Makes s3rver's multipart uploads answer as S3 does where s3rver 3 does not:
 * - CompleteMultipartUpload naming a part that was never uploaded, or with another part's ETag:
 *   400 `InvalidPart` (s3rver opens the missing file in a stream nobody listens to, and the ENOENT
 *   ends the process); parts out of order: 400 `InvalidPartOrder`;
 * - CompleteMultipartUpload or UploadPart of an upload that does not exist: 404 `NoSuchUpload`
 *   (s3rver answers 500, or creates the upload's directory for the part); an UploadPart whose part
 *   number is not 1 to 10,000: 400 `InvalidArgument`.
 * The upload id and part number come from the client's query and name paths in s3rver's directory:
 * both are checked before s3rver uses them.
 */
export function fixMultipartUploads(): void {
  const require = createRequire(import.meta.url);
  const Store = require('s3rver/lib/stores/filesystem') as { prototype: FilesystemStore };
  const S3Error = require('s3rver/lib/models/error') as S3ErrorClass;
  const noSuchUpload = (uploadId: string): Error =>
    new S3Error(
      'NoSuchUpload',
      'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      { UploadId: uploadId },
    );
  /** The directory of upload `uploadId` of `bucket`. @throws S3Error NoSuchUpload when there is none. */
  const openUpload = async (store: FilesystemStore, bucket: string, uploadId: string): Promise<string> => {
    if (!UPLOAD_ID.test(uploadId)) throw noSuchUpload(uploadId);
    const dir = path.join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
    await access(path.join(dir, 'key')).catch(() => {
      throw noSuchUpload(uploadId);
    });
    return dir;
  };

  const { putPart, putObjectMultipart } = Store.prototype;
  Store.prototype.putPart = async function (this: FilesystemStore, bucket, uploadId, partNumber, content) {
    if (!/^\d{1,5}$/.test(partNumber) || Number(partNumber) < 1 || Number(partNumber) > 10_000)
      throw new S3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', {
        ArgumentName: 'partNumber',
        ArgumentValue: partNumber,
      });
    await openUpload(this, bucket, uploadId);
    return putPart.call(this, bucket, uploadId, partNumber, content);
  };
  Store.prototype.putObjectMultipart = async function (this: FilesystemStore, bucket, uploadId, parts) {
    const dir = await openUpload(this, bucket, uploadId);
    if (parts.some((part, i) => i > 0 && part.number <= (parts[i - 1] as CompletedPart).number))
      throw new S3Error(
        'InvalidPartOrder',
        'The list of parts was not in ascending order. The parts list must be specified in order by part number.',
        { UploadId: uploadId },
      );
    for (const part of parts) {
      const md5 = await readFile(path.join(dir, `${part.number}.md5`), 'utf8').catch(() => undefined);
      if (md5 === undefined || md5 !== part.etag)
        throw new S3Error(
          'InvalidPart',
          "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
          { UploadId: uploadId, PartNumber: part.number, ETag: part.etag },
        );
    }
    return putObjectMultipart.call(this, bucket, uploadId, parts);
  };
}
