import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { XMLParser } from 'fast-xml-parser';
import type { ObjectIdentity } from 'keel/cache';
import { classify } from 'keel';
import { commitStaged, type Staged, type WriteThrough, type WriteThroughResult } from './write-through.js';
import type { StagingTap } from './staging-tap.js';

/*
 * Write-through of multipart uploads: each part is staged as it goes to the origin and kept once
 * the origin accepted it with the part's MD5 as ETag. CompleteMultipartUpload commits the parts it
 * names to the cache when the origin's ETag is the one their bytes make (S3's MD5 of the parts'
 * MD5s, `-N`; or the MD5 of the whole object, as some S3 implementations answer). Abort, a failed
 * complete, or a part that failed drops what was staged. A part uploaded through another process
 * (another worker) than the complete is not known here: the object is then only not cached.
 */

/** Uploads whose parts are kept at once; beyond this the least recently used is dropped. */
export const MAX_STAGED_UPLOADS = 1000;

/** Parts kept at once over all uploads (S3's most for one upload); beyond this, as above. */
export const MAX_STAGED_PARTS = 10_000;

/** S3's highest part number. */
const MAX_PART_NUMBER = 10_000;

/** Largest CompleteMultipartUpload body read to learn its parts (10,000 parts fit). */
export const MAX_COMPLETE_BODY_BYTES = 2 * 1024 * 1024;

/** Largest CompleteMultipartUpload answer read to check it (a result document is small). */
export const MAX_COMPLETE_ANSWER_BYTES = 64 * 1024;

const xml = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  trimValues: true,
  processEntities: true,
  isArray: (name) => name === 'Part',
});

interface StagedPart {
  tap: StagingTap;
  md5: Buffer;
}

interface StagedMultipart {
  id: ObjectIdentity;
  parts: Map<number, StagedPart>;
}

/** The parts of multipart uploads staged for the cache, by upload. */
export class MultipartThrough {
  private readonly uploads = new Map<string, StagedMultipart>();
  /** Parts kept over all uploads. */
  private partCount = 0;

  constructor(private readonly through: WriteThrough) {}

  /**
   * Starts staging part `partNumber` (a string from the client) of `uploadId`, or undefined when it
   * is not staged (a bad part number, the staging bound reached). What the upload staged before
   * stays until the part's answer says whether it is kept.
   */
  beginPart(
    id: ObjectIdentity,
    uploadId: string,
    partNumber: string,
    declaredBytes: number,
    body: Readable,
  ): Staged | undefined {
    const n = Number(partNumber);
    if (!/^\d+$/.test(partNumber) || n < 1 || n > MAX_PART_NUMBER) return undefined;
    const key = uploadKey(id, uploadId);
    if (!this.makeRoom(key, declaredBytes)) {
      // Without this part the upload cannot be cached: drop what it has.
      void this.drop(id, uploadId);
      return undefined;
    }
    const tap = this.through.stage(body);
    return {
      body: tap,
      settle: async (answer) => {
        let kept = false;
        try {
          const why = answer?.status === 200 ? await tap.whole(declaredBytes) : 'the part was not accepted';
          kept = why === undefined && answer?.headers.etag === `"${tap.digest().toString('hex')}"`;
        } catch {
          kept = false;
        }
        const upload = this.uploads.get(key) ?? { id, parts: new Map<number, StagedPart>() };
        const former = upload.parts.get(n);
        if (former) await this.forget(former);
        if (kept) {
          // Kept without its file descriptor until the complete reads it.
          await tap.closeFile();
          upload.parts.set(n, { tap, md5: tap.digest() });
          this.partCount++;
          this.uploads.delete(key);
          this.uploads.set(key, upload);
        } else {
          upload.parts.delete(n);
          await tap.remove();
          this.through.release(declaredBytes);
        }
        return undefined;
      },
    };
  }

  /** True when parts of this upload are staged here (its complete is worth reading). */
  tracks(id: ObjectIdentity, uploadId: string): boolean {
    return this.uploads.has(uploadKey(id, uploadId));
  }

  /**
   * After the origin answered a CompleteMultipartUpload (`answer`, its document `doc`) whose body
   * was `request`: commits the parts it names when the answer's ETag is the one their bytes make.
   * The upload's staged parts are dropped whatever happens. Never throws.
   */
  async complete(
    id: ObjectIdentity,
    uploadId: string,
    request: Buffer,
    answer: { status: number } | undefined,
    doc: Buffer | undefined,
  ): Promise<WriteThroughResult> {
    const key = uploadKey(id, uploadId);
    const upload = this.uploads.get(key);
    this.uploads.delete(key);
    try {
      if (!upload) return { cached: false, reason: 'its parts are not staged in this process' };
      if (answer?.status !== 200 || doc === undefined)
        return { cached: false, reason: `the origin answered ${answer?.status ?? 'nothing'}` };
      const text = doc.toString('utf8');
      const etag = /<CompleteMultipartUploadResult[\s>]/.test(text)
        ? /<ETag>([^<]*)<\/ETag>/.exec(text)?.[1]?.replace(/&quot;|&#34;/g, '"')
        : undefined;
      if (etag === undefined) return { cached: false, reason: 'the origin did not complete the upload' };
      const listed = listedParts(request);
      if (listed === undefined) return { cached: false, reason: 'the part list could not be read' };
      const taps: StagingTap[] = [];
      const md5s: Buffer[] = [];
      for (const p of listed) {
        const staged = upload.parts.get(p.number);
        if (!staged || p.etag.replace(/"/g, '') !== staged.md5.toString('hex'))
          return { cached: false, reason: `part ${p.number} is not the one staged` };
        taps.push(staged.tap);
        md5s.push(staged.md5);
      }
      const ours = `"${createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${listed.length}"`;
      if (etag !== ours && etag !== `"${await wholeMd5(taps)}"`)
        return { cached: false, reason: `the origin's ETag ${etag} is not the one the parts make (${ours})` };
      return await commitStaged(this.through.ctx, this.through.cache, id, etag, taps);
    } catch (err) {
      return { cached: false, reason: `the commit failed: ${classify(err).message}` };
    } finally {
      if (upload) for (const part of upload.parts.values()) await this.forget(part);
    }
  }

  /** Drops what is staged for the upload (aborted, or no longer worth keeping). */
  async drop(id: ObjectIdentity, uploadId: string): Promise<void> {
    const key = uploadKey(id, uploadId);
    const upload = this.uploads.get(key);
    this.uploads.delete(key);
    if (upload) for (const part of upload.parts.values()) await this.forget(part);
  }

  private async forget(part: StagedPart): Promise<void> {
    this.partCount--;
    this.through.release(part.tap.bytes);
    await part.tap.remove();
  }

  /**
   * Reserves `bytes` for a part of the upload `key`, dropping the least recently used other
   * uploads while they do not fit (or while too many uploads are kept).
   */
  private makeRoom(key: string, bytes: number): boolean {
    if (this.through.cache.bypassed) return false;
    for (;;) {
      const full =
        (!this.uploads.has(key) && this.uploads.size >= MAX_STAGED_UPLOADS) ||
        this.partCount >= MAX_STAGED_PARTS;
      if (!full && this.through.reserve(bytes)) return true;
      const oldest = [...this.uploads.keys()].find((k) => k !== key);
      const upload = oldest === undefined ? undefined : this.uploads.get(oldest);
      if (oldest === undefined || !upload) return false;
      this.uploads.delete(oldest);
      // Released at once, removed in the background.
      for (const part of upload.parts.values()) {
        this.partCount--;
        this.through.release(part.tap.bytes);
        void part.tap.remove();
      }
      upload.parts.clear();
    }
  }
}

function uploadKey(id: ObjectIdentity, uploadId: string): string {
  return `${id.bucket}\n${id.key}\n${uploadId}`;
}

/** The parts a CompleteMultipartUpload body names, in its order; undefined when it does not parse. */
function listedParts(body: Buffer): { number: number; etag: string }[] | undefined {
  let doc: unknown;
  try {
    doc = xml.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  const parts = (doc as { CompleteMultipartUpload?: { Part?: unknown } } | undefined)?.CompleteMultipartUpload
    ?.Part;
  if (!Array.isArray(parts) || parts.length === 0) return undefined;
  const out: { number: number; etag: string }[] = [];
  for (const p of parts as unknown[]) {
    const { PartNumber: n, ETag: etag } = (p ?? {}) as { PartNumber?: unknown; ETag?: unknown };
    if (typeof n !== 'string' || !/^\d+$/.test(n) || typeof etag !== 'string') return undefined;
    out.push({ number: Number(n), etag });
  }
  return out;
}

/** The MD5 of the staged files one after the other. */
async function wholeMd5(taps: StagingTap[]): Promise<string> {
  const md5 = createHash('md5');
  const chunk = Buffer.allocUnsafe(1024 * 1024);
  for (const tap of taps) {
    const fh = await tap.opened();
    if (!fh) return '';
    for (let at = 0; at < tap.bytes;) {
      const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, tap.bytes - at), at);
      if (bytesRead === 0) return '';
      md5.update(chunk.subarray(0, bytesRead));
      at += bytesRead;
    }
    await tap.closeFile();
  }
  return md5.digest('hex');
}
