import { createHash, createHmac, timingSafeEqual, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { crc32 } from 'node:zlib';
import { S3Errors, type S3ErrorSpec } from '../s3/s3-error.js';

/** sha256 of the empty string: the "previous headers" line of a chunk's string to sign. */
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** What chunk signatures are chained from: the verified request's signing key, time, scope and signature. */
export interface ChunkSigning {
  signingKey: Buffer;
  amzDate: string;
  scope: string;
  /** The request's own (seed) signature, hex. */
  seedSignature: string;
}

/** Options of {@link decodeAwsChunked}. */
export interface AwsChunkedOptions {
  /** Verify every chunk's signature (and a trailer's) chained from the seed; absent: unsigned chunks. */
  signing?: ChunkSigning | undefined;
  /** The payload length the client declared (`x-amz-decoded-content-length`): more or fewer bytes fail. */
  decodedLength?: number | undefined;
  /** The client's `x-amz-trailer`: the checksum trailer that must follow the last chunk (and is checked). */
  trailer?: string | undefined;
  /** Largest chunk accepted, held in memory until its signature is checked (default 16 MiB). */
  maxChunkBytes?: number;
  /** Called with the declared trailer's value once the whole body is checked, before its end is released. */
  onTrailer?: (name: string, value: string) => void;
}

/** A streaming body that must not reach the origin, with the S3 error the client gets. */
export class BodyRejectedError extends Error {
  constructor(readonly s3: S3ErrorSpec) {
    super(`${s3.code}: ${s3.message}`);
    this.name = 'BodyRejectedError';
  }
}

/** HMAC-SHA256 of a chunk's string to sign, as SigV4 streaming defines it. */
export function chunkSignature(
  signing: Omit<ChunkSigning, 'seedSignature'>,
  previousSignature: string,
  chunkSha256Hex: string,
  kind: 'PAYLOAD' | 'TRAILER' = 'PAYLOAD',
): string {
  const lines =
    kind === 'PAYLOAD'
      ? [
          'AWS4-HMAC-SHA256-PAYLOAD',
          signing.amzDate,
          signing.scope,
          previousSignature,
          EMPTY_SHA256,
          chunkSha256Hex,
        ]
      : ['AWS4-HMAC-SHA256-TRAILER', signing.amzDate, signing.scope, previousSignature, chunkSha256Hex];
  return createHmac('sha256', signing.signingKey).update(lines.join('\n'), 'utf8').digest('hex');
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const malformed = (what: string): BodyRejectedError =>
  new BodyRejectedError(S3Errors.badRequest(`the aws-chunked body is malformed: ${what}`));
const incomplete = (what: string): BodyRejectedError =>
  new BodyRejectedError({
    status: 400,
    code: 'IncompleteBody',
    message: `You did not provide the number of bytes specified by the Content-Length HTTP header (${what})`,
  });

/** A running checksum named by a trailer (`x-amz-checksum-<algorithm>`), base64 at the end; undefined when keel cannot compute it. */
function checksumOf(trailer: string): { update(b: Buffer): void; digest(): string } | undefined {
  const algo = trailer.replace(/^x-amz-checksum-/, '');
  if (algo === 'crc32') {
    let c = 0;
    return {
      update: (b) => {
        c = crc32(b, c);
      },
      digest: () => {
        const out = Buffer.alloc(4);
        out.writeUInt32BE(c >>> 0);
        return out.toString('base64');
      },
    };
  }
  if (algo === 'sha1' || algo === 'sha256') {
    const h: Hash = createHash(algo);
    return { update: (b) => h.update(b), digest: () => h.digest('base64') };
  }
  return undefined;
}

/**
 * Decodes an `aws-chunked` body (`<hex-size>[;chunk-signature=…]\r\n<data>\r\n`…, a zero chunk,
 * optional trailers) into its payload, and checks it on the way: with `signing`, every chunk's
 * signature (chained from the seed signature, STREAMING-AWS4-HMAC-SHA256-PAYLOAD), and the trailer
 * signature when one is sent; the declared decoded length; and a crc32/sha1/sha256 trailer checksum.
 * Data is released only once it is verified, and the last verified piece is held back until the
 * whole body is, so a receiver that counts on Content-Length never sees a complete body that was
 * bad. A failure destroys the stream with an {@link BodyRejectedError}.
 */
export function decodeAwsChunked(options: AwsChunkedOptions = {}): Transform {
  const signing = options.signing;
  const maxChunk = options.maxChunkBytes ?? 16 * 1024 * 1024;
  const checksum = options.trailer ? checksumOf(options.trailer.trim().toLowerCase()) : undefined;
  let buf: Buffer = Buffer.alloc(0);
  let state: 'header' | 'data' | 'crlf' | 'trailers' | 'done' = 'header';
  let remaining = 0;
  let previous = signing?.seedSignature ?? '';
  let expectedSig = '';
  let chunkHash: Hash | undefined;
  let pending: Buffer[] = []; // data of the chunk being read (signed chunks wait for their signature)
  let held: Buffer[] = []; // verified data not yet released
  let total = 0;
  const trailers: string[] = [];
  let trailerSigned = false;

  const release = (t: Transform, next: Buffer[]): void => {
    for (const b of held) t.push(b);
    held = next;
  };

  let chunks = 0;
  const verifyChunk = (size: number): void => {
    if (!signing) return;
    chunks++;
    const hex = size === 0 ? EMPTY_SHA256 : (chunkHash as Hash).digest('hex');
    const want = chunkSignature(signing, previous, hex);
    if (!same(want, expectedSig))
      throw new BodyRejectedError({
        ...S3Errors.signatureMismatch(),
        message: `The signature of chunk ${chunks}${size === 0 ? ' (the final one)' : ''} does not match; the upload was stopped.`,
      });
    previous = expectedSig;
  };

  const readHeader = (line: string): void => {
    const [sizeText = '', ...ext] = line.split(';');
    if (!/^[0-9a-fA-F]{1,16}$/.test(sizeText)) throw malformed(`bad chunk size line "${line.slice(0, 40)}"`);
    const size = parseInt(sizeText, 16);
    if (size > maxChunk) throw malformed(`a chunk of ${size} bytes is larger than ${maxChunk}`);
    if (signing) {
      const sig = ext.map((e) => /^chunk-signature=([0-9a-f]{64})$/.exec(e.trim())?.[1]).find(Boolean);
      if (!sig) throw malformed('a chunk without chunk-signature in a signed streaming upload');
      expectedSig = sig;
      chunkHash = createHash('sha256');
    }
    if (options.decodedLength !== undefined && total + size > options.decodedLength)
      throw incomplete(`the chunks carry more than x-amz-decoded-content-length ${options.decodedLength}`);
    if (size === 0) {
      verifyChunk(0);
      state = 'trailers';
    } else {
      remaining = size;
      state = 'data';
    }
  };

  const finishTrailers = (t: Transform): void => {
    if (options.decodedLength !== undefined && total !== options.decodedLength)
      throw incomplete(`received ${total} of ${options.decodedLength} bytes`);
    const values = new Map(
      trailers.map((l) => {
        const c = l.indexOf(':');
        return [l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim()] as const;
      }),
    );
    if (options.trailer) {
      const name = options.trailer.trim().toLowerCase();
      const value = values.get(name);
      if (value === undefined) throw incomplete(`the trailer ${name} was declared but not sent`);
      if (checksum && checksum.digest() !== value)
        throw new BodyRejectedError({
          status: 400,
          code: 'BadDigest',
          message: `The ${name} you specified did not match the calculated checksum.`,
        });
      if (signing && !trailerSigned)
        throw malformed('the trailer of a signed streaming upload is not signed');
      options.onTrailer?.(name, value);
    }
    state = 'done';
    release(t, []);
  };

  const readTrailer = (line: string): void => {
    const c = line.indexOf(':');
    if (c <= 0) throw malformed(`bad trailer line "${line.slice(0, 40)}"`);
    const name = line.slice(0, c).trim().toLowerCase();
    if (name === 'x-amz-trailer-signature') {
      if (!signing) return;
      const canonical = trailers.map((l) => {
        const i = l.indexOf(':');
        return `${l.slice(0, i).trim().toLowerCase()}:${l.slice(i + 1).trim()}\n`;
      });
      const hex = createHash('sha256').update(canonical.join(''), 'utf8').digest('hex');
      const want = chunkSignature(signing, previous, hex, 'TRAILER');
      if (!same(want, line.slice(c + 1).trim()))
        throw new BodyRejectedError({
          ...S3Errors.signatureMismatch(),
          message: 'The trailer signature does not match; the upload was stopped.',
        });
      trailerSigned = true;
      return;
    }
    trailers.push(line);
  };

  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      try {
        for (;;) {
          if (state === 'done') {
            buf = Buffer.alloc(0);
            break;
          }
          if (state === 'data') {
            if (buf.length === 0) break;
            const take = buf.subarray(0, Math.min(remaining, buf.length));
            buf = buf.subarray(take.length);
            remaining -= take.length;
            total += take.length;
            checksum?.update(take);
            if (signing) {
              (chunkHash as Hash).update(take);
              pending.push(take);
            } else release(this, [take]);
            if (remaining === 0) state = 'crlf';
            continue;
          }
          if (state === 'crlf') {
            if (buf.length < 2) break;
            if (buf[0] !== 0x0d || buf[1] !== 0x0a) throw malformed('chunk data not followed by CRLF');
            buf = buf.subarray(2);
            if (signing) {
              verifyChunk(1);
              release(this, pending);
              pending = [];
            }
            state = 'header';
            continue;
          }
          const eol = buf.indexOf('\r\n');
          if (eol === -1) {
            if (buf.length > 4096) throw malformed('a chunk header or trailer line longer than 4 KiB');
            break;
          }
          const line = buf.subarray(0, eol).toString('latin1');
          buf = buf.subarray(eol + 2);
          if (state === 'header') readHeader(line);
          else if (line === '') finishTrailers(this);
          else readTrailer(line);
        }
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        // A body that ends right after the zero chunk (no empty trailer line) is complete too.
        if (state === 'trailers' && buf.length === 0 && trailers.length === 0) finishTrailers(this);
        if (state !== 'done') throw incomplete('the body ended before its final zero-length chunk');
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}
