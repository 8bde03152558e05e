/**
 * DeleteObjects of keys that look like numbers: s3rver 3 parses the request's XML with value
 * conversion on, so `<Key>0</Key>` becomes the number 0 and the delete fails with 500
 * InternalError (`encodeKeyPath(...).split is not a function`). The suite's cleanup deletes every
 * object of a test's buckets with DeleteObjects, so each test that writes keys such as "0" … "4"
 * would end in a teardown error. This is s3rver's own DeleteObjects with the keys kept as text.
 */
import { createRequire } from 'node:module';
import type { IncomingMessage } from 'node:http';

interface KoaContext {
  req: IncomingMessage;
  params: { bucket: string };
  body: unknown;
  store: {
    existsObject(bucket: string, key: string): Promise<boolean>;
    deleteObject(bucket: string, key: string): Promise<void>;
  };
}
interface XmlParserV3 {
  validate(xml: string): true | object;
  parse(xml: string, options: Record<string, unknown>): unknown;
}
type S3ErrorClass = new (code: string, message: string) => Error;

let applied = false;

async function readText(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Makes s3rver's DeleteObjects keep every key as the text the client sent. Applied once per process. */
export function keepDeleteObjectsKeysAsText(): void {
  if (applied) return;
  applied = true;
  const require = createRequire(import.meta.url);
  const controllerPath = require.resolve('s3rver/lib/controllers/object');
  // The same XML parser and entity decoder s3rver's controller uses, so nothing but the key type changes.
  const requireAsS3rver = createRequire(controllerPath);
  const xmlParser = requireAsS3rver('fast-xml-parser') as XmlParserV3;
  const he = requireAsS3rver('he') as { decode(s: string): string };
  const objectCtrl = require(controllerPath) as { deleteMultipleObjects: (ctx: KoaContext) => Promise<void> };
  const S3Error = require('s3rver/lib/models/error') as S3ErrorClass;
  const malformed = (): Error =>
    new S3Error(
      'MalformedXML',
      'The XML you provided was not well-formed or did not validate against our published schema.',
    );
  objectCtrl.deleteMultipleObjects = async (ctx) => {
    const xml = await readText(ctx.req);
    if (xmlParser.validate(xml) !== true) throw malformed();
    const body = xmlParser.parse(xml, {
      tagValueProcessor: (a: string) => he.decode(a),
      parseNodeValue: false,
    }) as {
      Delete?: { Object?: { Key: unknown } | { Key: unknown }[] };
    };
    const objects = body.Delete?.Object;
    if (objects === undefined) throw malformed();
    const keys = ([] as { Key: unknown }[]).concat(objects).map((o) => String(o.Key));
    await Promise.all(
      keys.map(async (key) => {
        if (await ctx.store.existsObject(ctx.params.bucket, key))
          await ctx.store.deleteObject(ctx.params.bucket, key);
      }),
    );
    ctx.body = {
      DeleteResult: {
        '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
        Deleted: keys.map((k) => ({ Key: k })),
      },
    };
  };
}
