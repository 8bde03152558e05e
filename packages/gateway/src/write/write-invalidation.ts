import { XMLParser } from 'fast-xml-parser';
import type { ObjectIdentity } from 'keel/cache';
import type { S3Target } from '../s3/s3-request.js';

/** Largest DeleteObjects body read to find its keys (1,000 keys of 1,024 bytes, escaped, fit). */
export const MAX_DELETE_BODY_BYTES = 8 * 1024 * 1024;

const xml = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  trimValues: false,
  processEntities: true,
  isArray: (name) => name === 'Object',
});

/** True for `POST /bucket?delete` (DeleteObjects), whose body names the keys it deletes. */
export function isDeleteObjects(method: string, target: S3Target): boolean {
  return (
    method === 'POST' && target.bucket !== undefined && target.key === undefined && target.query.has('delete')
  );
}

/**
 * The objects of a DeleteObjects body (`<Delete><Object><Key>…</Key><VersionId>…</VersionId></Object>…`).
 * A body that does not parse names no object (the origin will refuse it with MalformedXML).
 */
export function deleteObjectsKeys(body: Buffer): { key: string; versionId: string | undefined }[] {
  let doc: unknown;
  try {
    doc = xml.parse(body.toString('utf8'));
  } catch {
    return [];
  }
  const del = (doc as { Delete?: { Object?: unknown } } | undefined)?.Delete;
  const objects = typeof del === 'object' && del !== null ? del.Object : undefined;
  if (!Array.isArray(objects)) return [];
  const out: { key: string; versionId: string | undefined }[] = [];
  for (const o of objects as unknown[]) {
    if (typeof o !== 'object' || o === null) continue;
    const { Key: key, VersionId: versionId } = o as { Key?: unknown; VersionId?: unknown };
    if (typeof key !== 'string') continue;
    out.push({ key, versionId: typeof versionId === 'string' && versionId !== '' ? versionId : undefined });
  }
  return out;
}

/** True for a browser form upload (`POST /bucket`, multipart/form-data): its key is in the form. */
export function isPostObject(method: string, target: S3Target, contentType: string | undefined): boolean {
  return (
    method === 'POST' &&
    target.bucket !== undefined &&
    target.key === undefined &&
    !target.query.has('delete') &&
    /^multipart\/form-data/i.test(contentType ?? '')
  );
}

/**
 * The key a successful form upload stored, from the origin's answer: a 303's redirect carries
 * `key=` in its query, a 201/204 carries the object's URL in `Location` (virtual-host or path
 * style). Undefined when the answer does not say.
 */
export function postObjectKey(bucket: string, location: string | undefined): string | undefined {
  if (location === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(location, 'http://origin.invalid');
  } catch {
    return undefined;
  }
  const fromQuery = url.searchParams.get('key');
  if (fromQuery !== null && url.searchParams.get('bucket') === bucket) return fromQuery;
  let path = url.pathname;
  if (!url.hostname.startsWith(`${bucket}.`)) {
    const prefix = `/${encodeURIComponent(bucket)}/`;
    if (!path.startsWith(prefix)) return undefined;
    path = path.slice(prefix.length - 1);
  }
  try {
    const key = decodeURIComponent(path.slice(1));
    return key === '' ? undefined : key;
  } catch {
    return undefined;
  }
}

/** The cache entries of one object a write may have changed: its current version, and the version named. */
function entriesOf(bucket: string, key: string, versionId: string | undefined | null): ObjectIdentity[] {
  const current: ObjectIdentity = { bucket, key, versionId: null };
  return versionId ? [current, { bucket, key, versionId }] : [current];
}

/**
 * The cached objects a successful non-read request changes: PUT (also CopyObject, whose
 * destination is the target), DELETE (also of one version), CompleteMultipartUpload, object
 * sub-resources (tagging, ACL, retention, restore …), and every key of a DeleteObjects body
 * (`deletedKeys`). Multipart steps that leave the object as it is (create, upload part, abort,
 * list parts) and SelectObjectContent change nothing.
 */
export function invalidatedBy(
  method: string,
  target: S3Target,
  deletedKeys: { key: string; versionId: string | undefined }[] = [],
): ObjectIdentity[] {
  const bucket = target.bucket;
  if (bucket === undefined || method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return [];
  if (target.key === undefined) return deletedKeys.flatMap((d) => entriesOf(bucket, d.key, d.versionId));
  const q = target.query;
  if (method === 'POST' && (q.has('uploads') || q.has('select'))) return [];
  if (q.has('uploadId') && method !== 'POST') return []; // UploadPart(Copy), AbortMultipartUpload
  return entriesOf(bucket, target.key, q.get('versionId'));
}

/**
 * The objects a write the origin answered changed, to drop from the cache: none for an error
 * answer; for a browser form upload, the key the origin's `Location` names (the form, not the
 * URL, names it); otherwise {@link invalidatedBy} of a 2xx answer.
 */
export function writtenObjects(
  method: string,
  target: S3Target,
  contentType: string | undefined,
  answer: { status: number; headers: Record<string, string | undefined> },
  deletedKeys: { key: string; versionId: string | undefined }[],
): ObjectIdentity[] {
  if (target.bucket === undefined || answer.status >= 400) return [];
  const postedKey = isPostObject(method, target, contentType)
    ? postObjectKey(target.bucket, answer.headers.location)
    : undefined;
  if (postedKey !== undefined)
    return invalidatedBy(method, target, [{ key: postedKey, versionId: undefined }]);
  return answer.status < 300 ? invalidatedBy(method, target, deletedKeys) : [];
}
