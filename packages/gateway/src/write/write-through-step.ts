import type { Readable } from 'node:stream';
import type { ObjectIdentity } from 'keel/cache';
import type { OriginResponse } from '../origin/origin-client.js';
import { readAll } from '../origin/relay.js';
import type { S3Target } from '../s3/s3-request.js';
import {
  MAX_COMPLETE_ANSWER_BYTES,
  MAX_COMPLETE_BODY_BYTES,
  type MultipartThrough,
} from './multipart-through.js';
import type { Staged, WriteThrough, WriteThroughResult } from './write-through.js';

/* Which step of write-through a forwarded request is, and what passthrough does for it. */

/** Write-through for a gateway: single PUTs and multipart uploads. */
export interface WriteThroughParts {
  puts: WriteThrough;
  multipart: MultipartThrough;
  /** Whether uploads of the object are written through (the cache rules); absent: all are. */
  allows?: (id: ObjectIdentity) => boolean;
}

/** Query parameters any write-through request may carry besides its own (the SDK's, a presign's). */
const NEUTRAL = /^(x-id|x-amz-(algorithm|credential|date|expires|signedheaders|signature|security-token))$/i;

type Kind = 'put' | 'part' | 'complete' | 'abort';

/** The step a request is, or undefined when write-through has nothing to do with it. */
function kindOf(method: string, target: S3Target, headers: Record<string, string>): Kind | undefined {
  if (target.bucket === undefined || target.key === undefined) return undefined;
  const q = target.query;
  const own = (...names: string[]): boolean =>
    [...q.keys()].every((k) => names.includes(k) || NEUTRAL.test(k));
  const sized = /^\d+$/.test(headers['content-length'] ?? '');
  const copy = headers['x-amz-copy-source'] !== undefined;
  if (method === 'PUT' && !copy && sized && own()) return 'put';
  if (
    method === 'PUT' &&
    !copy &&
    sized &&
    q.has('uploadId') &&
    q.has('partNumber') &&
    own('uploadId', 'partNumber')
  )
    return 'part';
  if (method === 'POST' && q.has('uploadId') && own('uploadId')) return 'complete';
  if (method === 'DELETE' && q.has('uploadId') && own('uploadId')) return 'abort';
  return undefined;
}

/**
 * What write-through does for one forwarded request: stage its body (`body` is then what to send
 * the origin), learn a CompleteMultipartUpload's part list (`wholeBodyLimit`: read the body whole
 * and give it to {@link keepBody}), and once the origin answered, commit or drop.
 */
export class WriteThroughStep {
  private completeBody: Buffer | undefined;

  private constructor(
    private readonly parts: WriteThroughParts,
    private readonly kind: Kind,
    private readonly id: ObjectIdentity,
    private readonly uploadId: string,
    private readonly staged: Staged | undefined,
    /** The body to send the origin. */
    readonly body: Readable,
    private readonly report: (id: ObjectIdentity, result: WriteThroughResult) => void,
  ) {}

  /** The step for this request, or undefined when write-through has nothing to do with it. */
  static async start(
    parts: WriteThroughParts,
    method: string,
    target: S3Target,
    headers: Record<string, string>,
    body: Readable,
    report: (id: ObjectIdentity, result: WriteThroughResult) => void,
  ): Promise<WriteThroughStep | undefined> {
    const kind = kindOf(method, target, headers);
    if (kind === undefined || target.bucket === undefined || target.key === undefined) return undefined;
    const id: ObjectIdentity = { bucket: target.bucket, key: target.key, versionId: null };
    const uploadId = target.query.get('uploadId') ?? '';
    if (parts.allows && !parts.allows(id)) {
      // A cache rule keeps the object's uploads out of the cache (it may have changed since an
      // upload's first parts were staged: those are not kept for a commit that will not come).
      if ((kind === 'complete' || kind === 'abort') && parts.multipart.tracks(id, uploadId))
        await parts.multipart.drop(id, uploadId);
      return undefined;
    }
    const length = Number(headers['content-length']);
    let staged: Staged | undefined;
    if (kind === 'put') staged = await parts.puts.begin(id, length, body);
    else if (kind === 'part')
      staged = parts.multipart.beginPart(id, uploadId, target.query.get('partNumber') ?? '', length, body);
    else if (kind === 'complete') {
      if (!parts.multipart.tracks(id, uploadId)) return undefined;
      if (!(length <= MAX_COMPLETE_BODY_BYTES)) {
        // A part list this long is not read: the upload is only forwarded, its parts not kept.
        await parts.multipart.drop(id, uploadId);
        return undefined;
      }
      await parts.puts.dropCached(id);
    }
    if ((kind === 'put' || kind === 'part') && !staged) return undefined;
    return new WriteThroughStep(parts, kind, id, uploadId, staged, staged?.body ?? body, report);
  }

  /** When set, the body must be read whole (it is at most this long) and given to {@link keepBody}. */
  get wholeBodyLimit(): number | undefined {
    return this.kind === 'complete' ? MAX_COMPLETE_BODY_BYTES : undefined;
  }

  keepBody(whole: Buffer): void {
    this.completeBody = whole;
  }

  /**
   * The origin answered `up` (after the write's invalidation, before the answer is relayed):
   * commits or drops what was staged. For a CompleteMultipartUpload whose answer was read here,
   * returns that answer's document, to relay instead of `up.body` (`lost`: it could not be read
   * whole, and cannot be relayed any more).
   */
  async answered(up: OriginResponse): Promise<Buffer | 'lost' | undefined> {
    if (this.kind === 'abort') {
      await this.parts.multipart.drop(this.id, this.uploadId);
      return undefined;
    }
    if (this.kind === 'complete') {
      const doc =
        up.status === 200
          ? await readAll(up.body, MAX_COMPLETE_ANSWER_BYTES).catch(() => undefined)
          : undefined;
      const result = await this.parts.multipart.complete(
        this.id,
        this.uploadId,
        this.completeBody ?? Buffer.alloc(0),
        up,
        doc,
      );
      this.report(this.id, result);
      return up.status !== 200 ? undefined : (doc ?? 'lost');
    }
    const result = await this.staged?.settle(up.status < 300 ? up : undefined);
    if (result) this.report(this.id, result);
    return undefined;
  }

  /** The write failed, was refused or never got an answer: drops what was staged. */
  async failed(): Promise<void> {
    if (this.kind === 'abort') await this.parts.multipart.drop(this.id, this.uploadId);
    else if (this.kind === 'complete')
      this.report(
        this.id,
        await this.parts.multipart.complete(this.id, this.uploadId, Buffer.alloc(0), undefined, undefined),
      );
    else {
      const result = await this.staged?.settle(undefined);
      if (result) this.report(this.id, result);
    }
  }
}
