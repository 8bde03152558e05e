import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from 'keel';
import type { ObjectIdentity } from 'keel/cache';
import {
  servePassthroughRead,
  type AuthTrust,
  type AuthorizationResult,
  type PassthroughAnswer,
} from '../read/passthrough-read.js';
import type { ReadContext } from '../read/read-context.js';
import { proxyEntryOf } from '../s3/forward-proxy.js';
import { announcesBody, refuseBody } from '../s3/refuse-body.js';
import { S3Errors, sendS3Error, type S3ErrorSpec } from '../s3/s3-error.js';
import { malformedTargetError, parseS3Target, type S3Target } from '../s3/s3-request.js';
import { forwardSigned } from '../write/signed-write.js';
import { signedRequestOf } from './signed-forward.js';

/** What the `passthrough` auth mode needs from the gateway. */
export interface PassthroughContext {
  ctx: ReadContext;
  /** The configured origin: forward-proxy requests are served for its host only. */
  origin: URL;
  /** Virtual-host-style base domain of requests sent to the gateway's own address (`--base-domain`). */
  baseDomain: string | undefined;
  clock: Clock;
  trust: AuthTrust | undefined;
  /** Called with what the origin said about each request, and the body bytes a hit saved. */
  onResult: (result: AuthorizationResult, savedBytes: number) => void;
  onInvalidate: (id: ObjectIdentity) => Promise<void> | void;
}

/** Query parameters of an object read the cache can serve (besides presigned-URL ones). */
function isCacheableRead(method: string, target: S3Target): boolean {
  return (
    (method === 'GET' || method === 'HEAD') &&
    target.bucket !== undefined &&
    target.key !== undefined &&
    [...target.query.keys()].every((k) => k === 'versionId' || k === 'x-id' || k.startsWith('X-Amz-'))
  );
}

/**
 * Serves one request in `passthrough` auth: no client keys and no origin credentials; every
 * request goes to the origin with the client's signature as it was signed, and the origin judges
 * it. Accepts origin-form requests (`GET /bucket/key`, path or virtual-host style with
 * `--base-domain`) and absolute-form ones for the origin's host (the gateway as an HTTP proxy;
 * any other host is refused with 403 and logged). Object reads are answered from the cache once
 * the origin authorised them (see {@link servePassthroughRead}); everything else is forwarded as
 * it is (see {@link forwardSigned}).
 */
export async function servePassthrough(
  p: PassthroughContext,
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
): Promise<PassthroughAnswer> {
  const method = req.method ?? 'GET';
  const refuse = (spec: S3ErrorSpec, outcome: 'DENIED' | 'ERROR'): PassthroughAnswer => {
    const labelled = {
      ...spec,
      headers: { ...spec.headers, 'x-keel-cache': outcome, 'x-keel-authorization': 'refused' },
    };
    if (announcesBody(req)) refuseBody(req, res, method, labelled, requestId, p.clock);
    else {
      req.resume();
      sendS3Error(res, method, labelled, requestId);
    }
    p.onResult('refused', 0);
    return { outcome, authorization: 'refused' };
  };
  const entry = proxyEntryOf(req, p.origin);
  if ('refused' in entry) {
    p.ctx.log('warn', `proxy request refused: ${entry.refused}`, { requestId });
    return refuse(S3Errors.accessDenied(`Access Denied: ${entry.refused}`), 'DENIED');
  }
  // A forward-proxy request names the origin's own host: `bucket.<origin host>` is virtual-host style.
  const baseDomain = entry.absolute ? p.origin.hostname : p.baseDomain;
  const target = parseS3Target(entry.target, entry.host, baseDomain);
  if ('malformed' in target) return refuse(malformedTargetError(target), 'ERROR');
  const signed = signedRequestOf(req, entry.target, entry.host);
  let answer: PassthroughAnswer;
  if (isCacheableRead(method, target)) {
    let saved = 0;
    const versionId = target.query.get('versionId');
    answer = await servePassthroughRead({
      ctx: p.ctx,
      req,
      res,
      id: { bucket: target.bucket as string, key: target.key as string, versionId },
      signed,
      requestId,
      trust: p.trust,
      onSaved: (bytes) => (saved += bytes),
    });
    p.onResult(answer.authorization, saved);
    return answer;
  }
  answer = await forwardSigned(req, res, target, signed, requestId, {
    ctx: p.ctx,
    clock: p.clock,
    onInvalidate: p.onInvalidate,
  });
  p.onResult(answer.authorization, 0);
  return answer;
}
