import type { ServerResponse } from 'node:http';

function escapeXml(s: string): string {
  return s.replace(
    /[<>&'"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] ?? c,
  );
}

/** An S3 error answer: status, S3 code, message and extra elements (e.g. RangeRequested). */
export interface S3ErrorSpec {
  status: number;
  code: string;
  message: string;
  resource?: string | undefined;
  extra?: Record<string, string | number>;
  /** Extra response headers (Retry-After, Content-Range …). */
  headers?: Record<string, string>;
}

/** The S3 error XML document for `spec`. */
export function s3ErrorXml(spec: S3ErrorSpec, requestId: string): string {
  const fields: [string, string | number][] = [
    ['Code', spec.code],
    ['Message', spec.message],
    ...(spec.resource === undefined ? [] : [['Resource', spec.resource] as [string, string]]),
    ...Object.entries(spec.extra ?? {}),
    ['RequestId', requestId],
  ];
  const inner = fields.map(([k, v]) => `<${k}>${escapeXml(String(v))}</${k}>`).join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error>${inner}</Error>`;
}

/**
 * Writes the status line and headers of an S3 error and returns the body that goes with them
 * (`undefined` for HEAD, answered without one as S3 does), for a caller that sends it itself.
 */
export function writeS3ErrorHead(
  res: ServerResponse,
  method: string,
  spec: S3ErrorSpec,
  requestId: string,
): string | undefined {
  const body = method === 'HEAD' ? undefined : s3ErrorXml(spec, requestId);
  res.writeHead(spec.status, {
    'content-type': 'application/xml',
    ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }),
    ...spec.headers,
  });
  return body;
}

/** The headers that name a request on its answer, each with the same id (an error document's RequestId and the logs' too). */
export const REQUEST_ID_HEADERS = ['x-request-id', 'x-amz-request-id', 'x-amz-id-2'] as const;

/** Names the request on its answer with {@link REQUEST_ID_HEADERS}, unless done already. */
export function stampRequestId(res: ServerResponse, requestId: string): void {
  if (res.headersSent || res.hasHeader('x-amz-request-id')) return;
  for (const name of REQUEST_ID_HEADERS) res.setHeader(name, requestId);
}

/** Sends an S3 error (no body for HEAD, as S3); a response already under way is cut off instead. */
export function sendS3Error(res: ServerResponse, method: string, spec: S3ErrorSpec, requestId: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.end(writeS3ErrorHead(res, method, spec, requestId));
}

/** The common S3 errors, by name. */
export const S3Errors = {
  invalidRange: (size: number): S3ErrorSpec => ({
    status: 416,
    code: 'InvalidRange',
    message: 'The requested range is not satisfiable',
    extra: { ActualObjectSize: size },
    headers: { 'content-range': `bytes */${size}` },
  }),
  preconditionFailed: (): S3ErrorSpec => ({
    status: 412,
    code: 'PreconditionFailed',
    message: 'At least one of the pre-conditions you specified did not hold',
    extra: { Condition: 'If-Match' },
  }),
  serviceUnavailable: (retryAfterSeconds: number, message?: string): S3ErrorSpec => ({
    status: 503,
    code: 'ServiceUnavailable',
    message: message ?? 'The origin is unavailable; please retry',
    headers: { 'retry-after': String(retryAfterSeconds) },
  }),
  slowDown: (retryAfterSeconds: number): S3ErrorSpec => ({
    status: 503,
    code: 'SlowDown',
    message: 'Please reduce your request rate.',
    headers: { 'retry-after': String(retryAfterSeconds) },
  }),
  accessDenied: (message = 'Access Denied'): S3ErrorSpec => ({ status: 403, code: 'AccessDenied', message }),
  signatureMismatch: (): S3ErrorSpec => ({
    status: 403,
    code: 'SignatureDoesNotMatch',
    message:
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
  }),
  invalidAccessKey: (): S3ErrorSpec => ({
    status: 403,
    code: 'InvalidAccessKeyId',
    message: 'The AWS Access Key Id you provided does not exist in our records.',
  }),
  badRequest: (message: string): S3ErrorSpec => ({ status: 400, code: 'InvalidRequest', message }),
  invalidBucketName: (message: string): S3ErrorSpec => ({ status: 400, code: 'InvalidBucketName', message }),
  internal: (): S3ErrorSpec => ({
    status: 500,
    code: 'InternalError',
    message: 'We encountered an internal error. Please try again.',
  }),
} as const;
