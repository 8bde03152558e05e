import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { classify, keelError } from 'keel';
import type { ObjectIdentity, RangeCache } from 'keel/cache';
import type { Clock } from 'keel';
import type { OriginClient } from '../origin/origin-client.js';
import type { OriginGuard } from '../origin/origin-guard.js';
import { readAll, relayAnswer, relayBuffered, type RelayLog } from '../origin/relay.js';
import { isThrottle, originAnswerOf, retryAfterSeconds } from '../origin/origin-guard.js';
import type { S3Target } from '../s3/s3-request.js';
import { refuseBody } from '../s3/refuse-body.js';
import { S3Errors, sendS3Error, type S3ErrorSpec } from '../s3/s3-error.js';
import { BodyRejectedError } from '../auth/aws-chunked.js';
import { MAX_FORWARDED_TRAILER_BODY_BYTES, planBody, type BodyPlan } from './upload-body.js';
import type { VerifiedRequest } from '../auth/sigv4-verify.js';
import {
  deleteObjectsKeys,
  isDeleteObjects,
  MAX_DELETE_BODY_BYTES,
  writtenObjects,
} from './write-invalidation.js';
import type { WriteThroughResult } from './write-through.js';
import { WriteThroughStep, type WriteThroughParts } from './write-through-step.js';

/** Client headers that are about this hop or the client's signature, never forwarded. */
const DROPPED = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'authorization',
  'x-amz-date',
  'x-amz-security-token',
  'x-amz-content-sha256',
  'x-amz-decoded-content-length',
  'x-amz-trailer',
  // Node answered `100 Continue` itself; the origin request is sent whole.
  'expect',
]);

/** Query parameters of a presigned URL: the client's signature, never forwarded (the origin request is signed anew). */
const PRESIGN_PARAMS = new Set([
  'x-amz-algorithm',
  'x-amz-credential',
  'x-amz-date',
  'x-amz-expires',
  'x-amz-signedheaders',
  'x-amz-signature',
  'x-amz-security-token',
]);

/** The raw query without the client's presigned-URL parameters, other parameters as sent. */
export function withoutPresignParams(rawQuery: string): string {
  if (!/x-amz-/i.test(rawQuery)) return rawQuery;
  return rawQuery
    .split('&')
    .filter((p) => {
      const name = p.split('=')[0] ?? '';
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // an undecodable name is not one of ours
      }
      return p !== '' && !PRESIGN_PARAMS.has(decoded.toLowerCase());
    })
    .join('&');
}

/** What {@link passthrough} needs besides the origin. */
export interface PassthroughOptions {
  /** The cache whose entries successful writes drop (none: nothing to invalidate). */
  cache?: RangeCache | undefined;
  /**
   * Called for each object a successful write changed, before its cache entry is dropped; the
   * answer waits for what it returns (the other workers dropping the object).
   */
  onInvalidate?: (id: ObjectIdentity) => Promise<void> | void;
  /** Called when a PutBucketCors or DeleteBucketCors reached the origin (whatever it answered), before the answer goes out. */
  onCorsChange?: (bucket: string) => void;
  /** The client's verified signature (`gateway` auth): chunk signatures are checked against it. */
  verified?: VerifiedRequest | undefined;
  /** Times how long a refused body is still read (default: the system clock). */
  clock?: Clock;
  /** Forward the request without the gateway's signature (a CORS preflight, an anonymous request). */
  unsigned?: boolean;
  /** Where the origin's own request ids of relayed answers are noted. */
  log?: RelayLog;
  /** Stages uploads for the cache, committed once the origin accepted them (none: forward only). */
  writeThrough?: WriteThroughParts | undefined;
  /** Told what became of each upload staged for write-through. */
  onWriteThrough?: (id: ObjectIdentity, result: WriteThroughResult) => void;
}

/**
 * Forwards any other S3 request (PUT, DELETE, multipart, List, bucket operations) to the origin,
 * re-signed, with its body streamed and its answer relayed as it is. A streaming (aws-chunked)
 * body is decoded, since its chunk signatures are the client's. When the origin accepts a write,
 * the cached copies it changed are dropped before the answer goes out, so the client's next read
 * cannot see the old bytes. Returns `PASS` when the origin's answer was relayed, `ERROR` when
 * the gateway answered an error itself (a refused body, an unreachable origin).
 */
export async function passthrough(
  origin: OriginClient,
  guard: OriginGuard,
  req: IncomingMessage,
  res: ServerResponse,
  target: S3Target,
  requestId: string,
  options: PassthroughOptions = {},
): Promise<'PASS' | 'ERROR'> {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || DROPPED.has(k)) continue;
    headers[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  const method = req.method ?? 'GET';
  if (method === 'OPTIONS') {
    // A CORS preflight has no body for the origin: whatever a client sent with it stays here.
    delete headers['content-length'];
    delete headers['content-type'];
    req.resume();
  }
  const plan: BodyPlan =
    method === 'OPTIONS' ? { body: req, verifier: undefined } : planBody(req, headers, options.verified);
  const refuse = (spec: S3ErrorSpec): 'ERROR' => {
    res.setHeader('x-keel-cache', 'ERROR');
    refuseBody(req, res, method, spec, requestId, options.clock);
    return 'ERROR';
  };
  if ('refuse' in plan) return refuse(plan.refuse.s3);
  let body = plan.body;
  const deleteList = isDeleteObjects(method, target) && options.cache !== undefined;
  const deleteListTooLarge = (): S3ErrorSpec =>
    S3Errors.badRequest(`a DeleteObjects body is at most ${MAX_DELETE_BODY_BYTES} bytes`);
  // A body whose length says it is too large is refused before any of it is read.
  if (deleteList && Number(headers['content-length']) > MAX_DELETE_BODY_BYTES)
    return refuse(deleteListTooLarge());
  let rejected: BodyRejectedError | undefined;
  if (plan.verifier) {
    const verifier = plan.verifier;
    verifier.on('error', (err) => {
      rejected =
        err instanceof BodyRejectedError
          ? err
          : new BodyRejectedError(S3Errors.badRequest(`the request body could not be read: ${err.message}`));
      req.unpipe(verifier);
    });
    const cut = (): void => {
      if (!req.complete)
        verifier.destroy(
          new BodyRejectedError({
            status: 400,
            code: 'IncompleteBody',
            message: 'The client closed the connection before the whole body was sent.',
          }),
        );
    };
    req.once('aborted', cut);
    req.once('error', cut);
    req.once('close', cut);
    req.pipe(verifier);
  }
  const hasBody = method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS';
  const through =
    options.writeThrough && !options.unsigned
      ? await WriteThroughStep.start(options.writeThrough, method, target, headers, body, (id, result) =>
          options.onWriteThrough?.(id, result),
        )
      : undefined;
  if (through) body = through.body;
  const corsChange =
    (method === 'PUT' || method === 'DELETE') && target.key === undefined && target.query.has('cors');
  const corsChanged = (): void => {
    if (corsChange && target.bucket !== undefined) options.onCorsChange?.(target.bucket);
  };
  let upload: Readable | Buffer = body;
  let deleted: { key: string; versionId: string | undefined }[] = [];
  if (deleteList || plan.trailer || through?.wholeBodyLimit !== undefined) {
    // DeleteObjects names the keys to drop in its body; a small streaming upload's checksum
    // trailer becomes a header; a CompleteMultipartUpload written through names its parts. Either
    // way the body is read whole (it is small) and passed on.
    const limit = deleteList
      ? MAX_DELETE_BODY_BYTES
      : Math.max(through?.wholeBodyLimit ?? 0, plan.trailer ? MAX_FORWARDED_TRAILER_BODY_BYTES : 0);
    const whole = await readAll(body, limit).catch(() => null);
    if (whole === null || whole === undefined) await through?.failed();
    if (whole === null) return refuse(rejected?.s3 ?? S3Errors.badRequest('the body could not be read'));
    if (whole === undefined) return refuse(deleteListTooLarge());
    if (deleteList) deleted = deleteObjectsKeys(whole);
    through?.keepBody(whole);
    const checksum = plan.trailer?.value();
    if (plan.trailer && checksum !== undefined) {
      headers[plan.trailer.name] = checksum;
      if (plan.trailer.algorithm !== undefined)
        headers['x-amz-sdk-checksum-algorithm'] = plan.trailer.algorithm;
    }
    upload = whole;
    headers['content-length'] = String(whole.length);
  }
  try {
    // Bodies cannot be replayed: one attempt through the breaker, no retry; an upload's answer
    // comes after its body, so no deadline either (the origin client's timeouts still apply).
    const up = await guard.call(
      target.bucket ?? '',
      (signal) =>
        origin
          .request({
            method,
            bucket: target.bucket,
            key: target.key,
            rawQuery: withoutPresignParams(target.rawQuery),
            headers,
            body: hasBody ? upload : undefined,
            signal,
            ...(options.unsigned ? { unsigned: true } : {}),
          })
          .catch((err: unknown) => {
            // The client's body was refused: not the origin's failure, so no breaker counts it.
            if (rejected) throw keelError('BAD_REQUEST', rejected.message, { s3Code: rejected.s3.code });
            throw err;
          }),
      {
        // What the request asks about: its object, or for a bucket or service request the request
        // itself, so a listing the origin keeps failing (a client retrying it) counts once.
        key: target.key ?? `${method} ?${withoutPresignParams(target.rawQuery)}`,
        retry: false,
        deadline: !hasBody,
        confirm: !options.unsigned,
      },
    );
    corsChanged();
    if (rejected) {
      // The origin answered before the body was refused (an early error): nothing was stored.
      up.body.on('error', () => undefined);
      up.body.destroy();
      await through?.failed();
      return refuse(rejected.s3);
    }
    const cache = options.cache;
    for (const id of writtenObjects(method, target, req.headers['content-type'], up, deleted)) {
      await options.onInvalidate?.(id);
      await cache?.invalidate(id).catch(() => undefined);
    }
    // After the invalidation, so the committed copy is the only one left; before the answer, so
    // the client's next read is a hit.
    const doc = await through?.answered(up);
    if (doc === 'lost') {
      res.destroy();
      return 'PASS';
    }
    if (doc) {
      relayBuffered(
        res,
        method,
        { status: up.status, headers: up.headers, body: doc },
        requestId,
        options.log,
      );
      return 'PASS';
    }
    await relayAnswer(res, method, up, requestId, options.log);
    return 'PASS';
  } catch (err) {
    // The origin may have applied the change before failing to answer.
    corsChanged();
    await through?.failed();
    if (rejected) return refuse(rejected.s3);
    // The origin's own answer (a 500, a 503 SlowDown …) is relayed as it was.
    const answered = originAnswerOf(err);
    if (answered) {
      relayBuffered(res, method, answered, requestId, options.log);
      return 'PASS';
    }
    // keel decided: the origin could not be reached, took too long, or its breaker is open.
    const e = classify(err);
    const after = retryAfterSeconds(e);
    const spec = isThrottle(e)
      ? S3Errors.slowDown(after)
      : S3Errors.serviceUnavailable(after, `the origin is unavailable (${e.code}); please retry`);
    sendS3Error(res, method, { ...spec, headers: { ...spec.headers, 'x-keel-cache': 'ERROR' } }, requestId);
    return 'ERROR';
  }
}
