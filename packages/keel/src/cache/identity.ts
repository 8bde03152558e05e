import { createHash } from 'node:crypto';

/** What names a cached object: never the request's Host, so clients cannot split or poison entries. */
export interface ObjectIdentity {
  bucket: string;
  key: string;
  /** S3 version id; absent or `null` for the current version of an unversioned object. */
  versionId?: string | null;
}

/** Hashes of recently used identities: a hit asks for its object's hash several times. */
const recent = new Map<string, string>();
const RECENT_MAX = 4096;

/** A stable hex hash of the identity, used as the object's directory name. */
export function identityHash(id: ObjectIdentity): string {
  const text = JSON.stringify([id.bucket, id.key, id.versionId ?? '']);
  let hash = recent.get(text);
  if (hash === undefined) {
    hash = createHash('sha256').update(text).digest('hex');
    if (recent.size >= RECENT_MAX) recent.clear();
    recent.set(text, hash);
  }
  return hash;
}

/** `bucket/key` (with `?versionId=` when set), for messages. */
export function describeIdentity(id: ObjectIdentity): string {
  return `${id.bucket}/${id.key}${id.versionId ? `?versionId=${id.versionId}` : ''}`;
}

/** True when both name the same object (an absent version id is the same as `null`). */
export function sameIdentity(a: ObjectIdentity, b: ObjectIdentity): boolean {
  return a.bucket === b.bucket && a.key === b.key && (a.versionId ?? null) === (b.versionId ?? null);
}
