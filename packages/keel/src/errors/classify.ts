import type { ErrorCode } from './codes.js';
import { isKeelError, keelError, KeelError, type KeelErrorOptions } from './keel-error.js';
import { redactString } from './redact.js';
import { parseRetryAfter } from './retry-after.js';
import { postgresMapping } from './postgres.js';
import { sqliteMapping } from './sqlite.js';

/** What a recognised failure becomes: its code, a description, and options over the code's defaults. */
export type Mapping = readonly [code: ErrorCode, describe: string, overrides?: KeelErrorOptions];

/** Node system error codes (errno names) and what they mean to keel. */
export const SYSTEM_ERRORS: Readonly<Record<string, Mapping>> = {
  ECONNRESET: ['NETWORK_RESET', 'the connection was reset by the peer'],
  EPIPE: ['NETWORK_RESET', 'the connection was closed while writing (broken pipe)'],
  ECONNABORTED: ['NETWORK_RESET', 'the connection was aborted'],
  ECONNREFUSED: ['CONNECTION_REFUSED', 'the connection was refused; is the service running?'],
  ETIMEDOUT: ['TIMEOUT', 'the operation timed out at the socket level'],
  EHOSTUNREACH: ['NETWORK_UNREACHABLE', 'the host is unreachable'],
  ENETUNREACH: ['NETWORK_UNREACHABLE', 'the network is unreachable'],
  ENETDOWN: ['NETWORK_UNREACHABLE', 'the network is down'],
  EAI_AGAIN: ['DNS_FAILURE', 'name resolution failed temporarily'],
  ENOTFOUND: [
    'DNS_FAILURE',
    'the host name does not resolve; check the configured address',
    { kind: 'permanent', retryable: false, hints: ['manual'] },
  ],
  ENOSPC: ['DISK_FULL', 'no space left on the device'],
  EDQUOT: ['DISK_FULL', 'the disk quota is exceeded'],
  EIO: ['IO_ERROR', 'a low-level I/O error occurred'],
  EROFS: ['READ_ONLY_FS', 'the file system is read-only'],
  EACCES: ['PERMISSION_DENIED', 'permission denied'],
  EPERM: ['PERMISSION_DENIED', 'operation not permitted'],
  ENOENT: ['NOT_FOUND', 'no such file or directory'],
  EMFILE: ['TOO_MANY_OPEN_FILES', 'the process has too many open files'],
  ENFILE: ['TOO_MANY_OPEN_FILES', 'the system has too many open files'],
  EBUSY: ['RESOURCE_BUSY', 'the resource is busy'],
  EAGAIN: ['RESOURCE_BUSY', 'the resource is temporarily unavailable'],
  ENOMEM: ['RESOURCE_EXHAUSTED', 'out of memory; do less at once (smaller batches, fewer in parallel)'],
  ENOBUFS: ['RESOURCE_EXHAUSTED', 'no buffer space is available; do less at once'],
  ERR_BUFFER_TOO_LARGE: [
    'RESOURCE_EXHAUSTED',
    'the buffer would exceed the largest size allowed; work in smaller pieces',
  ],
  ERR_STRING_TOO_LONG: [
    'RESOURCE_EXHAUSTED',
    'the string would exceed the longest allowed; work in smaller pieces',
  ],
  EADDRINUSE: [
    'ADDRESS_IN_USE',
    'another process is listening on this address; stop it or choose another address',
  ],
  EADDRNOTAVAIL: [
    'ADDRESS_NOT_AVAILABLE',
    "the address is not one of this machine's; check the configured address",
  ],
};

/** undici and fetch error codes. */
export const UNDICI_ERRORS: Readonly<Record<string, Mapping>> = {
  UND_ERR_CONNECT_TIMEOUT: ['TIMEOUT', 'connecting to the server timed out'],
  UND_ERR_HEADERS_TIMEOUT: ['TIMEOUT', 'the server did not send response headers in time'],
  UND_ERR_BODY_TIMEOUT: ['TIMEOUT', 'the response body stalled'],
  UND_ERR_RESPONSE_STATUS_CODE: ['HTTP_ERROR', 'the server answered with an error status'],
  UND_ERR_SOCKET: ['NETWORK_RESET', 'the socket failed'],
  UND_ERR_CLOSED: ['NETWORK_RESET', 'the client was closed'],
  UND_ERR_DESTROYED: ['NETWORK_RESET', 'the client was destroyed'],
  UND_ERR_ABORTED: ['ABORTED', 'the request was aborted'],
  UND_ERR_REQ_CONTENT_LENGTH_MISMATCH: ['BAD_REQUEST', 'request body length does not match Content-Length'],
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: [
    'NETWORK_RESET',
    'response body length does not match Content-Length',
    { retryable: true },
  ],
  UND_ERR_INFO: ['UNKNOWN', 'undici reported an error'],
  UND_ERR_INVALID_ARG: ['INVALID_INPUT', 'an invalid argument was passed to the HTTP client'],
  UND_ERR_NOT_SUPPORTED: ['INVALID_INPUT', 'the HTTP client does not support this'],
  UND_ERR_BPL_MISSING_UPSTREAM: ['SERVICE_UNAVAILABLE', 'no upstream is available'],
  UND_ERR_RES_EXCEEDED_MAX_SIZE: [
    'BAD_GATEWAY',
    'the response exceeded the maximum size',
    { retryable: false },
  ],
  UND_ERR_PRX_TLS: ['CONNECTION_REFUSED', 'the TLS connection to the proxy failed'],
};

/**
 * HTTP statuses: 408, 409 (a lock conflict), 425, 429 and 5xx retryable, except 501 and 505 (the
 * server does not implement the method or version: asking again cannot help); other 4xx not.
 */
export const HTTP_STATUSES: Readonly<Record<number, Mapping>> = {
  304: ['NOT_MODIFIED', 'not modified'],
  400: ['BAD_REQUEST', 'the request was rejected as malformed'],
  401: ['UNAUTHORIZED', 'authentication is required or failed'],
  403: ['FORBIDDEN', 'access is forbidden'],
  404: ['NOT_FOUND', 'not found'],
  405: ['BAD_REQUEST', 'method not allowed', { httpStatus: 405 }],
  408: ['TIMEOUT', 'the server timed out waiting for the request', { httpStatus: 408 }],
  409: ['LOCK_CONFLICT', 'the resource is locked or being changed by another request; retry with backoff'],
  410: ['NOT_FOUND', 'gone', { httpStatus: 410 }],
  412: ['PRECONDITION_FAILED', 'a precondition failed'],
  413: ['BAD_REQUEST', 'the request is too large', { httpStatus: 413 }],
  416: ['INVALID_RANGE', 'the requested range is not satisfiable'],
  422: ['INVALID_INPUT', 'the request could not be processed', { httpStatus: 422 }],
  425: ['TOO_EARLY', 'too early'],
  429: ['RATE_LIMITED', 'too many requests'],
  500: ['INTERNAL', 'the server failed'],
  501: [
    'HTTP_ERROR',
    'not implemented by the server',
    { httpStatus: 501, retryable: false, kind: 'permanent' },
  ],
  502: ['BAD_GATEWAY', 'bad gateway'],
  503: ['SERVICE_UNAVAILABLE', 'the service is unavailable'],
  504: ['TIMEOUT', 'the gateway timed out', { httpStatus: 504 }],
  505: ['HTTP_ERROR', 'HTTP version not supported', { httpStatus: 505, retryable: false, kind: 'permanent' }],
  507: ['DISK_FULL', 'the server is out of storage', { httpStatus: 507 }],
};

/** S3 (and S3-compatible) error codes. */
export const S3_ERRORS: Readonly<Record<string, Mapping>> = {
  SlowDown: ['RATE_LIMITED', 'S3 asks to slow down', { httpStatus: 503 }],
  Throttling: ['RATE_LIMITED', 'throttled', { httpStatus: 503 }],
  ThrottlingException: ['RATE_LIMITED', 'throttled', { httpStatus: 400 }],
  TooManyRequestsException: ['RATE_LIMITED', 'too many requests'],
  RequestLimitExceeded: ['RATE_LIMITED', 'request limit exceeded', { httpStatus: 503 }],
  InternalError: ['INTERNAL', 'S3 had an internal error'],
  ServiceUnavailable: ['SERVICE_UNAVAILABLE', 'S3 is unavailable'],
  RequestTimeout: ['TIMEOUT', 'S3 timed out waiting for the request body', { httpStatus: 400 }],
  RequestTimeTooSkewed: [
    'CLOCK_SKEW',
    'the request time differs too much from the server time; sync the clock',
  ],
  ExpiredToken: ['CREDENTIALS_EXPIRED', 'the security token has expired; refresh the credentials'],
  TokenRefreshRequired: ['CREDENTIALS_EXPIRED', 'the security token must be refreshed'],
  InvalidAccessKeyId: ['UNAUTHORIZED', 'the access key id is not known', { httpStatus: 403 }],
  SignatureDoesNotMatch: ['UNAUTHORIZED', 'the request signature does not match', { httpStatus: 403 }],
  AccessDenied: ['FORBIDDEN', 'access denied'],
  AllAccessDisabled: ['FORBIDDEN', 'all access to this object is disabled'],
  NoSuchKey: ['NOT_FOUND', 'no such key'],
  NoSuchBucket: ['NOT_FOUND', 'no such bucket'],
  NoSuchVersion: ['NOT_FOUND', 'no such version', { httpStatus: 404 }],
  NoSuchUpload: ['NOT_FOUND', 'no such multipart upload'],
  NotFound: ['NOT_FOUND', 'not found'],
  InvalidRange: ['INVALID_RANGE', 'the requested range is not satisfiable'],
  PreconditionFailed: ['PRECONDITION_FAILED', 'a precondition failed'],
  NotModified: ['NOT_MODIFIED', 'not modified'],
  InvalidArgument: ['INVALID_INPUT', 'an argument is invalid'],
  InvalidRequest: ['BAD_REQUEST', 'the request is invalid'],
  InvalidBucketName: ['INVALID_INPUT', 'the bucket name is invalid'],
  EntityTooLarge: ['BAD_REQUEST', 'the object is too large', { httpStatus: 400 }],
  BucketAlreadyExists: ['CONFLICT', 'the bucket already exists'],
  BucketNotEmpty: ['CONFLICT', 'the bucket is not empty'],
  OperationAborted: [
    'CONFLICT',
    'a conflicting operation is in progress',
    { retryable: true, kind: 'transient' },
  ],
  InvalidObjectState: ['FORBIDDEN', 'the object is not in a state that allows this (archived?)'],
};

const MAX_CAUSE_DEPTH = 4;

/**
 * Turns anything thrown into a KeelError. It never throws, and returns a KeelError unchanged.
 * Recognised: Node system errors, undici/fetch errors (also as the `cause` of fetch's TypeError),
 * HTTP responses and errors carrying a status (Retry-After read into `details.retryAfterMs`),
 * S3 error codes (AWS SDK v3 errors included), AbortError and TimeoutError (DOMException too), and
 * throwables that are not Errors. The message is redacted of secrets.
 */
export function classify(err: unknown): KeelError {
  try {
    return classifyInner(err, 0);
  } catch {
    return keelError('UNKNOWN', 'an unclassifiable value was thrown', {}, { stack: false });
  }
}

function classifyInner(err: unknown, depth: number): KeelError {
  if (isKeelError(err)) return err;
  if (err === null || err === undefined) {
    return keelError('UNKNOWN', `${String(err)} was thrown instead of an Error`, {});
  }
  if (typeof err !== 'object') {
    const text = typeof err === 'string' ? err : `${typeof err} ${primitiveText(err)}`;
    return keelError('UNKNOWN', redactString(`a non-Error was thrown: ${text.slice(0, 500)}`), {});
  }
  const e = err as Record<string, unknown>;
  const name = safeString(e.name);
  const message = redactString(safeString(e.message) || describeObject(err));
  const code = safeString(e.code) || safeString(e.Code);
  const options: KeelErrorOptions = { cause: err };

  if (name === 'TimeoutError' || isTimeoutReason(e.cause)) {
    return keelError('TIMEOUT', `the operation timed out: ${message}`, {}, options);
  }
  if (name === 'AbortError' || code === 'ABORT_ERR') {
    return keelError('ABORTED', `the operation was aborted: ${message}`, {}, options);
  }

  const system = code ? SYSTEM_ERRORS[code] : undefined;
  if (system) return fromMapping(system, message, systemDetails(e), options);

  const undici = code ? UNDICI_ERRORS[code] : undefined;
  if (undici) {
    const status = statusOf(e);
    if (code === 'UND_ERR_RESPONSE_STATUS_CODE' && status !== undefined)
      return fromStatus(status, e, message, options);
    return fromMapping(undici, message, { errorCode: code }, options);
  }

  const postgres = postgresMapping(e, name, code, message);
  if (postgres) return fromMapping(postgres, message, code ? { sqlState: code } : {}, options);

  const sqlite = sqliteMapping(code);
  if (sqlite) return fromMapping(sqlite, message, { errorCode: code }, options);

  // V8 out of memory for one allocation: a RangeError without a code.
  if (name === 'RangeError' && /Array buffer allocation failed|Invalid string length/.test(message)) {
    return keelError(
      'RESOURCE_EXHAUSTED',
      `${message} (out of memory for one allocation; work in smaller pieces)`,
      {},
      options,
    );
  }

  // fetch() refuses ports on the Fetch standard's block list (1, 21, 25, 6000 …) before connecting.
  if (
    name === 'TypeError' &&
    safeString((e.cause as { message?: unknown } | undefined)?.message) === 'bad port'
  ) {
    return keelError(
      'INVALID_INPUT',
      `${message}: fetch() refuses this port (on the Fetch standard's list of bad ports); use another port`,
      {},
      options,
    );
  }
  // fetch() wraps the real failure: TypeError('fetch failed', { cause })
  if (
    depth < MAX_CAUSE_DEPTH &&
    e.cause !== undefined &&
    e.cause !== null &&
    (name === 'TypeError' || !code)
  ) {
    const inner = classifyInner(e.cause, depth + 1);
    if (inner.code !== 'UNKNOWN') {
      return keelError(inner.code, `${message}: ${inner.message}`, inner.details, {
        cause: err,
        kind: inner.kind,
        severity: inner.severity,
        retryable: inner.retryable,
        httpStatus: inner.httpStatus,
        hints: inner.hints,
      });
    }
  }

  const s3Code = s3CodeOf(e, name, code);
  const s3 = s3Code ? S3_ERRORS[s3Code] : undefined;
  if (s3) {
    const status = statusOf(e);
    const details: Record<string, unknown> = { s3Code };
    const retryAfterMs = retryAfterOf(e);
    if (retryAfterMs !== undefined) details.retryAfterMs = retryAfterMs;
    const mapped = fromMapping(s3, message, details, options);
    if (status !== undefined && status !== mapped.httpStatus && s3[2]?.httpStatus === undefined) {
      return keelError(mapped.code, mapped.message, details, { ...options, ...s3[2], httpStatus: status });
    }
    return mapped;
  }

  const status = statusOf(e);
  if (status !== undefined && status >= 300) return fromStatus(status, e, message, options);

  if (typeof e.$retryable === 'object' && e.$retryable !== null) {
    return keelError(
      'UNKNOWN',
      message,
      {},
      { ...options, retryable: true, kind: 'transient', hints: ['retry'] },
    );
  }
  if (code) return keelError('UNKNOWN', message, { errorCode: code }, options);
  if (!(err instanceof Error)) {
    return keelError('UNKNOWN', `a non-Error object was thrown: ${message}`, {}, options);
  }
  return keelError('UNKNOWN', message, {}, options);
}

function fromMapping(
  [code, describe, overrides]: Mapping,
  message: string,
  details: Record<string, unknown>,
  options: KeelErrorOptions,
): KeelError {
  const text = message && message !== describe ? `${message} (${describe})` : describe;
  return keelError(code, text, details, { ...options, ...overrides });
}

function fromStatus(
  status: number,
  e: Record<string, unknown>,
  message: string,
  options: KeelErrorOptions,
): KeelError {
  const mapping: Mapping =
    HTTP_STATUSES[status] ??
    (status >= 500
      ? ['SERVICE_UNAVAILABLE', `the server failed with HTTP ${status}`, { httpStatus: status }]
      : status >= 400
        ? ['HTTP_ERROR', `the request failed with HTTP ${status}`, { httpStatus: status, kind: 'client' }]
        : ['HTTP_ERROR', `unexpected HTTP ${status}`, { httpStatus: status }]);
  const details: Record<string, unknown> = { status };
  const retryAfterMs = retryAfterOf(e);
  if (retryAfterMs !== undefined) details.retryAfterMs = retryAfterMs;
  return fromMapping(mapping, message, details, options);
}

function statusOf(e: Record<string, unknown>): number | undefined {
  const meta = e.$metadata as { httpStatusCode?: unknown } | undefined;
  const response = e.response as { status?: unknown; statusCode?: unknown } | undefined;
  for (const v of [e.status, e.statusCode, meta?.httpStatusCode, response?.status, response?.statusCode]) {
    if (typeof v === 'number' && Number.isInteger(v) && v >= 100 && v <= 599) return v;
  }
  return undefined;
}

function retryAfterOf(e: Record<string, unknown>): number | undefined {
  const response = e.response as { headers?: unknown } | undefined;
  for (const headers of [
    e.headers,
    response?.headers,
    (e.$response as { headers?: unknown } | undefined)?.headers,
  ]) {
    const value = headerValue(headers, 'retry-after');
    if (value !== undefined) return parseRetryAfter(value);
  }
  if (e.retryAfter !== undefined) return parseRetryAfter(e.retryAfter);
  return undefined;
}

function headerValue(headers: unknown, name: string): unknown {
  if (!headers || typeof headers !== 'object') return undefined;
  const h = headers as { get?: unknown } & Record<string, unknown>;
  if (typeof h.get === 'function') return (h.get as (n: string) => unknown).call(headers, name) ?? undefined;
  for (const key of Object.keys(h)) if (key.toLowerCase() === name) return h[key];
  return undefined;
}

function s3CodeOf(e: Record<string, unknown>, name: string, code: string): string | undefined {
  if (code && Object.hasOwn(S3_ERRORS, code)) return code;
  if (name && Object.hasOwn(S3_ERRORS, name)) return name;
  const errorField = e.Error as { Code?: unknown } | undefined;
  const nested = safeString(errorField?.Code);
  if (nested && Object.hasOwn(S3_ERRORS, nested)) return nested;
  return undefined;
}

function isTimeoutReason(cause: unknown): boolean {
  return typeof cause === 'object' && cause !== null && (cause as { name?: unknown }).name === 'TimeoutError';
}

function systemDetails(e: Record<string, unknown>): Record<string, unknown> {
  const details: Record<string, unknown> = { errorCode: e.code };
  if (typeof e.syscall === 'string') details.syscall = e.syscall;
  if (typeof e.path === 'string') details.path = e.path;
  if (typeof e.address === 'string') details.address = e.address;
  if (typeof e.port === 'number') details.port = e.port;
  return details;
}

function primitiveText(v: unknown): string {
  switch (typeof v) {
    case 'number':
    case 'boolean':
    case 'bigint':
      return v.toString();
    case 'symbol':
      return v.toString();
    case 'function':
      return `function ${v.name || '<anonymous>'}`;
    default:
      return '';
  }
}

function safeString(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function describeObject(v: object): string {
  try {
    const seen = new WeakSet();
    const text = JSON.stringify(v, (_k, val: unknown) => {
      if (typeof val === 'object' && val !== null) {
        if (seen.has(val)) return '[Circular]';
        seen.add(val);
      }
      return typeof val === 'bigint' ? val.toString() : val;
    });
    return (text ?? Object.prototype.toString.call(v)).slice(0, 500);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/** True when retrying `err` may succeed (`classify(err).retryable`). */
export function isRetryable(err: unknown): boolean {
  return classify(err).retryable;
}

/** The HTTP status that best answers `err` (`classify(err).httpStatus`). */
export function httpStatusOf(err: unknown): number {
  return classify(err).httpStatus;
}

/**
 * Gives `err` a keel code and a message of your own, keeping it as the cause. Kind, severity and
 * retryability come from `code`'s defaults.
 */
export function wrap(err: unknown, code: string, message: string): KeelError {
  const classified = classify(err);
  return keelError(
    code,
    redactString(message),
    { ...classified.details, causeCode: classified.code },
    { cause: err },
  );
}
