import { createHash } from 'node:crypto';

/** What names a cached object: never the request's Host, so clients cannot split or poison entries. */
export interface ObjectIdentity {
  bucket: string;
  key: string;
  /** S3 version id; absent or `null` for the current version of an unversioned object. */
  versionId?: string | null;
}

/** A stable hex hash of the identity, used as the object's directory name. */
export function identityHash(id: ObjectIdentity): string {
  return createHash('sha256')
    .update(JSON.stringify([id.bucket, id.key, id.versionId ?? '']))
    .digest('hex');
}

/** `bucket/key` (with `?versionId=` when set), for messages. */
export function describeIdentity(id: ObjectIdentity): string {
  return `${id.bucket}/${id.key}${id.versionId ? `?versionId=${id.versionId}` : ''}`;
}
