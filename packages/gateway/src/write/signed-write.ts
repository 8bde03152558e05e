import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { classify, keelError, type Clock } from 'keel';
import type { ObjectIdentity } from 'keel/cache';
import type { SignedRequest } from '../auth/signed-forward.js';
import type { OriginResponse } from '../origin/origin-client.js';
import { isThrottle, originAnswerOf, retryAfterSeconds } from '../origin/origin-guard.js';
import { readAll, relayAnswer, relayBuffered } from '../origin/relay.js';
import type { PassthroughAnswer } from '../read/passthrough-read.js';
import { safe, type ReadContext } from '../read/read-context.js';
import { announcesBody, refuseBody } from '../s3/refuse-body.js';
import { S3Errors, sendS3Error } from '../s3/s3-error.js';
import type { S3Target } from '../s3/s3-request.js';
import {
  deleteObjectsKeys,
  isDeleteObjects,
  MAX_DELETE_BODY_BYTES,
  writtenObjects,
} from './write-invalidation.js';

/** What {@link forwardSigned} needs besides the request. */
export interface SignedWriteOptions {
  ctx: ReadContext;
  clock: Clock;
  /** Called for each object a write the origin accepted changed, before its cache entry is dropped. */
  onInvalidate: (id: ObjectIdentity) => Promise<void> | void;
}

/**
 * Forwards a request other than a cacheable read in `passthrough` auth (writes, multipart steps,
 * listings, bucket operations, `partNumber` reads, CORS preflights) exactly as the client signed
 * it: target, Host, headers and body byte for byte (an aws-chunked body stays aws-chunked, its
 * chunk signatures the origin's to check). Once the origin accepts a write, the cached copies it
 * changed are dropped before the answer goes out. 401/403 from the origin are DENIED, other
 * answers PASS; an origin that cannot be reached is 503 with Retry-After (ERROR).
 */
export async function forwardSigned(
  req: IncomingMessage,
  res: ServerResponse,
  target: S3Target,
  signed: SignedRequest,
  requestId: string,
  options: SignedWriteOptions,
): Promise<PassthroughAnswer> {
  const { ctx } = options;
  const method = signed.method;
  const hasBody = announcesBody(req);
  let body: Readable | Buffer | undefined = hasBody ? req : undefined;
  let deleted: { key: string; versionId: string | undefined }[] = [];
  if (isDeleteObjects(method, target) && ctx.cache !== undefined) {
    // DeleteObjects names the keys to drop in its body: read whole (it is small) and sent on byte for byte.
    const tooLarge = S3Errors.badRequest(`a DeleteObjects body is at most ${MAX_DELETE_BODY_BYTES} bytes`);
    const refuse = (): PassthroughAnswer => {
      res.setHeader('x-keel-cache', 'ERROR');
      refuseBody(req, res, method, tooLarge, requestId, options.clock);
      return { outcome: 'ERROR', authorization: 'refused' };
    };
    if (Number(req.headers['content-length']) > MAX_DELETE_BODY_BYTES) return refuse();
    const whole = await readAll(req, MAX_DELETE_BODY_BYTES).catch(() => null);
    if (whole === null) {
      res.destroy();
      return { outcome: 'ERROR', authorization: 'refused' };
    }
    if (whole === undefined) return refuse();
    deleted = deleteObjectsKeys(whole);
    body = whole;
  }
  let up: OriginResponse;
  try {
    // A body cannot be replayed: one attempt, no retry; an upload's answer comes after its body,
    // so no deadline either (the origin client's timeouts still apply).
    up = await ctx.guard.call(
      target.bucket ?? '',
      (signal) =>
        ctx.origin
          .request({
            method,
            target: signed.target,
            host: signed.host,
            headers: signed.headers,
            body,
            unsigned: true,
            signal,
          })
          .catch((err: unknown) => {
            // The client hung up mid-body: not the origin's failure, so no breaker counts it.
            if (hasBody && !req.complete)
              throw keelError('BAD_REQUEST', 'the client closed the connection mid-body');
            throw err;
          }),
      { key: target.key, retry: !hasBody, deadline: !hasBody, confirm: false },
    );
  } catch (err) {
    return failed(req, res, method, err, requestId, ctx);
  }
  if (up.status === 401 || up.status === 403) {
    res.setHeader('x-keel-authorization', 'denied');
    await relayAnswer(res, method, up, requestId, ctx.log, 'DENIED');
    return { outcome: 'DENIED', authorization: 'denied' };
  }
  if (up.status < 400) ctx.guard.noteAnswer(target.bucket ?? '', up.status);
  for (const id of writtenObjects(method, target, req.headers['content-type'], up, deleted)) {
    await options.onInvalidate(id);
    const cache = ctx.cache;
    if (cache) await safe(ctx, 'invalidate', () => cache.invalidate(id));
  }
  res.setHeader('x-keel-authorization', 'forwarded');
  await relayAnswer(res, method, up, requestId, ctx.log);
  return { outcome: 'PASS', authorization: 'forwarded' };
}

function failed(
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  err: unknown,
  requestId: string,
  ctx: ReadContext,
): PassthroughAnswer {
  const e = classify(err);
  if (e.code === 'BAD_REQUEST' && !req.complete) {
    // Nobody is left to answer.
    res.destroy();
    return { outcome: 'ERROR', authorization: 'forwarded' };
  }
  res.setHeader('x-keel-authorization', 'unavailable');
  const answered = originAnswerOf(err);
  if (answered) {
    relayBuffered(res, method, answered, requestId, ctx.log);
    return { outcome: 'PASS', authorization: 'unavailable' };
  }
  const after = retryAfterSeconds(e);
  const spec = isThrottle(e)
    ? S3Errors.slowDown(after)
    : S3Errors.serviceUnavailable(after, `the origin is unavailable (${e.code}); please retry`);
  sendS3Error(res, method, { ...spec, headers: { ...spec.headers, 'x-keel-cache': 'ERROR' } }, requestId);
  return { outcome: 'ERROR', authorization: 'unavailable' };
}
