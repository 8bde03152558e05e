import { createRequire } from 'node:module';

interface ListedObject {
  key: string;
  lastModifiedDate: Date;
  size: number;
  metadata: Record<string, string>;
}
interface KoaContext {
  method: string;
  query: Record<string, string | string[] | undefined>;
  params: { bucket: string; queryMethod?: string };
  body: unknown;
  store: {
    listObjects(
      bucket: string,
      options: { delimiter: string; startAfter: string; prefix: string; maxKeys: number },
    ): Promise<{ objects: ListedObject[]; commonPrefixes: string[]; isTruncated: boolean }>;
  };
}
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => unknown;
interface RouterLayer {
  path: string;
  methods: string[];
  stack: Middleware[];
}
type S3ErrorClass = new (code: string, message: string, detail?: Record<string, string>) => Error;

/**
 * Teaches s3rver ListObjectVersions (`GET /bucket?versions`), which s3rver 3 refuses with 405, and
 * which clients use to empty a bucket. s3rver keeps no versions, so the answer is S3's for a bucket
 * that never had versioning enabled: each object once, as its latest version, with version id
 * `null`, and no delete markers. Parameters as S3 takes them: `prefix`, `delimiter`, `key-marker`,
 * `version-id-marker` (only `null` exists), `max-keys` (at most 1,000 entries, objects and common
 * prefixes together) and `encoding-type=url`. Other methods on `?versions` are refused as before.
 * @throws Error when s3rver's router no longer has the route this wraps (a new s3rver version).
 */
export function addListObjectVersions(): void {
  const require = createRequire(import.meta.url);
  const router = require('s3rver/lib/routes') as { stack: RouterLayer[] };
  const S3Error = require('s3rver/lib/models/error') as S3ErrorClass;
  const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account') as {
    DUMMY_ACCOUNT: { id: number; displayName: string };
  };
  const layer = router.stack.find((l) => l.path === '/:bucket' && l.methods.includes('GET'));
  const handler = layer?.stack.at(-1);
  if (!layer || !handler)
    throw new Error('s3rver-list-versions: s3rver has no GET /:bucket route to add ListObjectVersions to');

  const invalidArgument = (message: string, name: string, value: string): Error =>
    new S3Error('InvalidArgument', message, { ArgumentName: name, ArgumentValue: value });

  const listVersions = async (ctx: KoaContext): Promise<void> => {
    const param = (name: string): string | undefined => {
      const v = ctx.query[name];
      return Array.isArray(v) ? v[0] : v;
    };
    const prefix = param('prefix') ?? '';
    const delimiter = param('delimiter') ?? '';
    const keyMarker = param('key-marker') ?? '';
    const versionIdMarker = param('version-id-marker') ?? '';
    const encodingType = param('encoding-type');
    const maxKeysText = param('max-keys') ?? '1000';
    if (encodingType !== undefined && encodingType !== 'url')
      throw invalidArgument('Invalid Encoding Method specified in Request', 'encoding-type', encodingType);
    if (versionIdMarker !== '' && keyMarker === '')
      throw invalidArgument(
        'A version-id marker cannot be specified without a key marker.',
        'version-id-marker',
        versionIdMarker,
      );
    if (versionIdMarker !== '' && versionIdMarker !== 'null')
      throw invalidArgument('Invalid version id specified', 'version-id-marker', versionIdMarker);
    if (!/^\d+$/.test(maxKeysText) || Number(maxKeysText) > 2147483647)
      throw invalidArgument(
        'Provided max-keys not an integer or within integer range',
        'max-keys',
        maxKeysText,
      );
    const maxKeys = Math.min(1000, Number(maxKeysText));

    const listed =
      maxKeys === 0
        ? { objects: [], commonPrefixes: [], isTruncated: false }
        : await ctx.store.listObjects(ctx.params.bucket, {
            prefix,
            delimiter,
            startAfter: keyMarker,
            maxKeys,
          });
    // Objects and common prefixes share max-keys, in key order. A common prefix that is the
    // marker itself was the last entry of the page before.
    const entries = [
      ...listed.objects.map((object) => ({ name: object.key, object })),
      ...listed.commonPrefixes.filter((p) => p > keyMarker).map((name) => ({ name, object: undefined })),
    ].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const page = entries.slice(0, maxKeys);
    const truncated = listed.isTruncated || page.length < entries.length;
    // Each key has one version, so the next page starts after the last name of this one.
    const next = truncated ? page.at(-1)?.name : undefined;
    const encode = (s: string): string => (encodingType === 'url' ? encodeURIComponent(s) : s);

    ctx.body = {
      ListVersionsResult: {
        '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
        Name: ctx.params.bucket,
        Prefix: encode(prefix),
        KeyMarker: encode(keyMarker),
        VersionIdMarker: versionIdMarker,
        NextKeyMarker: next === undefined ? undefined : encode(next),
        NextVersionIdMarker: next === undefined ? undefined : 'null',
        MaxKeys: maxKeysText,
        Delimiter: delimiter === '' ? undefined : encode(delimiter),
        IsTruncated: truncated,
        EncodingType: encodingType,
        Version: page.flatMap(({ object: o }) =>
          o === undefined
            ? []
            : [
                {
                  Key: encode(o.key),
                  VersionId: 'null',
                  IsLatest: true,
                  LastModified: o.lastModifiedDate.toISOString(),
                  ETag: o.metadata.etag,
                  Size: o.size,
                  Owner: { ID: DUMMY_ACCOUNT.id, DisplayName: DUMMY_ACCOUNT.displayName },
                  StorageClass: 'STANDARD',
                },
              ],
        ),
        CommonPrefixes: page.flatMap(({ name, object }) =>
          object === undefined ? [{ Prefix: encode(name) }] : [],
        ),
      },
    };
  };

  layer.stack[layer.stack.length - 1] = (ctx, next) =>
    ctx.method === 'GET' && ctx.params.queryMethod === 'versions' ? listVersions(ctx) : handler(ctx, next);
}
