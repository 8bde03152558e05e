/**
 * ListObjectVersions for s3rver, which answers `GET /bucket?versions` with 405. The s3-tests
 * suite lists every bucket's versions to empty it after each test (`nuke_bucket`), so without
 * this one refused listing fails the cleanup of every test and the setup of every test after it.
 *
 * s3rver has no versioning, so the answer is what S3 gives for a bucket that never had versioning
 * enabled: each object once, as its current version, with version id `null`. Nothing else of
 * s3rver changes: other methods on `?versions` are still refused with 405 as before.
 * keel's own s3rver patches (`fixS3rver`) may do the same; origin.ts applies them after this one,
 * so where they do, theirs answers.
 */
import { createRequire } from 'node:module';

interface KoaContext {
  method: string;
  query: Record<string, string | string[] | undefined>;
  params: { bucket: string; queryMethod?: string };
  body: unknown;
  store: FilesystemStore;
}
interface ListedObject {
  key: string;
  lastModifiedDate: Date;
  size: number;
  metadata: Record<string, string>;
}
interface FilesystemStore {
  listObjects(
    bucket: string,
    options: { delimiter?: string; startAfter?: string; prefix?: string; maxKeys?: number },
  ): Promise<{ objects: ListedObject[]; commonPrefixes: string[]; isTruncated: boolean }>;
}
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => unknown;
interface RouterLayer {
  path: string;
  methods: string[];
  stack: Middleware[];
}
type S3ErrorClass = new (code: string, message: string, detail?: Record<string, string>) => Error;

let applied = false;

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Teaches s3rver `GET /bucket?versions` (ListObjectVersions of an unversioned bucket), by wrapping
 * the handler of its `GET /:bucket` route. Applied once per process. Patches applied after this
 * one that wrap the same handler (keel's own) answer before it.
 * @throws when s3rver's router has no such route (another s3rver version).
 */
export function addListObjectVersions(): void {
  if (applied) return;
  applied = true;
  const require = createRequire(import.meta.url);
  const router = require('s3rver/lib/routes') as { stack: RouterLayer[] };
  const S3Error = require('s3rver/lib/models/error') as S3ErrorClass;
  const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account') as {
    DUMMY_ACCOUNT: { id: number; displayName: string };
  };
  const layer = router.stack.find((l) => l.path === '/:bucket' && l.methods.includes('GET'));
  const handler = layer?.stack.at(-1);
  if (!layer || !handler) throw new Error('s3rver has no GET /:bucket route to add ListObjectVersions to');
  const listVersions = async (ctx: KoaContext): Promise<void> => {
    const prefix = one(ctx.query.prefix) ?? '';
    const delimiter = one(ctx.query.delimiter) ?? '';
    const keyMarker = one(ctx.query['key-marker']) ?? '';
    const maxKeysText = one(ctx.query['max-keys']) ?? '1000';
    const maxKeys = Number(maxKeysText);
    if (!/^\d+$/.test(maxKeysText) || maxKeys > 2147483647)
      throw new S3Error('InvalidArgument', 'Provided max-keys not an integer or within integer range', {
        ArgumentName: 'max-keys',
        ArgumentValue: maxKeysText,
      });
    const encodingType = one(ctx.query['encoding-type']);
    if (encodingType !== undefined && encodingType !== 'url')
      throw new S3Error('InvalidArgument', 'Invalid Encoding Method specified in Request', {
        ArgumentName: 'encoding-type',
        ArgumentValue: encodingType,
      });
    // With encoding-type=url (the suite's boto3 asks for it) names are URL-encoded, and the client
    // decodes them: sent as they are, a key with `%` or `+` comes back as another key.
    const name = (s: string): string => (encodingType === 'url' ? encodeURIComponent(s) : s);
    const limit = Math.min(1000, maxKeys);
    const result =
      limit === 0
        ? { objects: [], commonPrefixes: [], isTruncated: false }
        : await ctx.store.listObjects(ctx.params.bucket, {
            ...(prefix ? { prefix } : {}),
            ...(delimiter ? { delimiter } : {}),
            ...(keyMarker ? { startAfter: keyMarker } : {}),
            maxKeys: limit,
          });
    // Every listed key has exactly one version, so the next page starts after the last name listed.
    const names = [...result.objects.map((o) => o.key), ...result.commonPrefixes].sort();
    const next = result.isTruncated ? names[names.length - 1] : undefined;
    ctx.body = {
      ListVersionsResult: {
        '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
        Name: ctx.params.bucket,
        Prefix: name(prefix),
        KeyMarker: name(keyMarker),
        VersionIdMarker: one(ctx.query['version-id-marker']) ?? '',
        NextKeyMarker: next === undefined ? undefined : name(next),
        NextVersionIdMarker: next === undefined ? undefined : 'null',
        MaxKeys: maxKeysText,
        Delimiter: delimiter ? name(delimiter) : undefined,
        EncodingType: encodingType,
        IsTruncated: result.isTruncated,
        Version: result.objects.map((o) => ({
          Key: name(o.key),
          VersionId: 'null',
          IsLatest: true,
          LastModified: o.lastModifiedDate.toISOString(),
          ETag: o.metadata.etag,
          Size: o.size,
          Owner: { ID: DUMMY_ACCOUNT.id, DisplayName: DUMMY_ACCOUNT.displayName },
          StorageClass: 'STANDARD',
        })),
        CommonPrefixes: result.commonPrefixes.map((p) => ({ Prefix: name(p) })),
      },
    };
  };
  // s3rver's router marks the request's query method before this handler runs, and refuses
  // `versions` with 405 only after it returns without an answer.
  layer.stack[layer.stack.length - 1] = (ctx, next) =>
    ctx.method === 'GET' && ctx.params.queryMethod === 'versions' ? listVersions(ctx) : handler(ctx, next);
}
