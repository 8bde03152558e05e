import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { classify, httpStatusOf, isRetryable, keelError, wrap, isKeelError, KeelError } from './index.js';

function sysErr(code: string, message = `${code} happened`): Error {
  return Object.assign(new Error(message), { code, syscall: 'connect', errno: -1 });
}

function domError(name: string): DOMException {
  return new DOMException(`${name} thrown`, name);
}

interface Case {
  name: string;
  input: () => unknown;
  code: string;
  retryable: boolean;
  kind?: string;
  httpStatus?: number;
}

const systemCases: Case[] = [
  {
    name: 'ECONNRESET',
    input: () => sysErr('ECONNRESET'),
    code: 'NETWORK_RESET',
    retryable: true,
    kind: 'transient',
  },
  { name: 'ECONNREFUSED', input: () => sysErr('ECONNREFUSED'), code: 'CONNECTION_REFUSED', retryable: true },
  { name: 'ECONNABORTED', input: () => sysErr('ECONNABORTED'), code: 'NETWORK_RESET', retryable: true },
  { name: 'ETIMEDOUT', input: () => sysErr('ETIMEDOUT'), code: 'TIMEOUT', retryable: true, httpStatus: 504 },
  { name: 'EPIPE', input: () => sysErr('EPIPE'), code: 'NETWORK_RESET', retryable: true },
  { name: 'EHOSTUNREACH', input: () => sysErr('EHOSTUNREACH'), code: 'NETWORK_UNREACHABLE', retryable: true },
  { name: 'ENETUNREACH', input: () => sysErr('ENETUNREACH'), code: 'NETWORK_UNREACHABLE', retryable: true },
  { name: 'EAI_AGAIN', input: () => sysErr('EAI_AGAIN'), code: 'DNS_FAILURE', retryable: true },
  {
    name: 'ENOTFOUND',
    input: () => sysErr('ENOTFOUND'),
    code: 'DNS_FAILURE',
    retryable: false,
    kind: 'permanent',
  },
  { name: 'ENOSPC', input: () => sysErr('ENOSPC'), code: 'DISK_FULL', retryable: false, httpStatus: 507 },
  { name: 'EDQUOT', input: () => sysErr('EDQUOT'), code: 'DISK_FULL', retryable: false },
  { name: 'EIO', input: () => sysErr('EIO'), code: 'IO_ERROR', retryable: false, kind: 'server' },
  { name: 'EROFS', input: () => sysErr('EROFS'), code: 'READ_ONLY_FS', retryable: false },
  { name: 'EACCES', input: () => sysErr('EACCES'), code: 'PERMISSION_DENIED', retryable: false },
  { name: 'EPERM', input: () => sysErr('EPERM'), code: 'PERMISSION_DENIED', retryable: false },
  { name: 'ENOENT', input: () => sysErr('ENOENT'), code: 'NOT_FOUND', retryable: false, httpStatus: 404 },
  { name: 'EMFILE', input: () => sysErr('EMFILE'), code: 'TOO_MANY_OPEN_FILES', retryable: true },
  { name: 'ENFILE', input: () => sysErr('ENFILE'), code: 'TOO_MANY_OPEN_FILES', retryable: true },
  { name: 'EBUSY', input: () => sysErr('EBUSY'), code: 'RESOURCE_BUSY', retryable: true },
  {
    name: 'EADDRINUSE',
    input: () => sysErr('EADDRINUSE'),
    code: 'ADDRESS_IN_USE',
    retryable: false,
    kind: 'permanent',
  },
];

const undiciCases: Case[] = [
  {
    name: 'UND_ERR_CONNECT_TIMEOUT',
    input: () => sysErr('UND_ERR_CONNECT_TIMEOUT'),
    code: 'TIMEOUT',
    retryable: true,
  },
  {
    name: 'UND_ERR_HEADERS_TIMEOUT',
    input: () => sysErr('UND_ERR_HEADERS_TIMEOUT'),
    code: 'TIMEOUT',
    retryable: true,
  },
  {
    name: 'UND_ERR_BODY_TIMEOUT',
    input: () => sysErr('UND_ERR_BODY_TIMEOUT'),
    code: 'TIMEOUT',
    retryable: true,
  },
  { name: 'UND_ERR_SOCKET', input: () => sysErr('UND_ERR_SOCKET'), code: 'NETWORK_RESET', retryable: true },
  { name: 'UND_ERR_CLOSED', input: () => sysErr('UND_ERR_CLOSED'), code: 'NETWORK_RESET', retryable: true },
  { name: 'UND_ERR_ABORTED', input: () => sysErr('UND_ERR_ABORTED'), code: 'ABORTED', retryable: false },
  {
    name: 'UND_ERR_RESPONSE_STATUS_CODE with a 503',
    input: () =>
      Object.assign(new Error('Response status code 503'), {
        code: 'UND_ERR_RESPONSE_STATUS_CODE',
        statusCode: 503,
      }),
    code: 'SERVICE_UNAVAILABLE',
    retryable: true,
  },
  {
    name: "fetch's TypeError wrapping a socket error",
    input: () => new TypeError('fetch failed', { cause: sysErr('UND_ERR_SOCKET') }),
    code: 'NETWORK_RESET',
    retryable: true,
  },
  {
    name: "fetch's TypeError wrapping ECONNREFUSED",
    input: () => new TypeError('fetch failed', { cause: sysErr('ECONNREFUSED') }),
    code: 'CONNECTION_REFUSED',
    retryable: true,
  },
];

const httpCases: Case[] = [
  ...(
    [
      [408, 'TIMEOUT', true],
      [425, 'TOO_EARLY', true],
      [429, 'RATE_LIMITED', true],
      [500, 'INTERNAL', true],
      [502, 'BAD_GATEWAY', true],
      [503, 'SERVICE_UNAVAILABLE', true],
      [504, 'TIMEOUT', true],
      [400, 'BAD_REQUEST', false],
      [401, 'UNAUTHORIZED', false],
      [403, 'FORBIDDEN', false],
      [404, 'NOT_FOUND', false],
      [409, 'LOCK_CONFLICT', true],
      [412, 'PRECONDITION_FAILED', false],
      [416, 'INVALID_RANGE', false],
      [418, 'HTTP_ERROR', false],
      [501, 'HTTP_ERROR', false],
      [599, 'SERVICE_UNAVAILABLE', true],
    ] as const
  ).map(([status, code, retryable]): Case => ({
    name: `HTTP ${status}`,
    input: () => ({ status, statusText: 'x' }),
    code,
    retryable,
    httpStatus: status,
  })),
  {
    name: 'a fetch Response-like object with statusCode',
    input: () => ({ statusCode: 503, headers: {} }),
    code: 'SERVICE_UNAVAILABLE',
    retryable: true,
  },
];

function s3Err(name: string, status: number): Error {
  return Object.assign(new Error(`${name} from S3`), {
    name,
    $metadata: { httpStatusCode: status },
    $fault: 'client',
  });
}

const s3Cases: Case[] = [
  {
    name: 'SlowDown',
    input: () => s3Err('SlowDown', 503),
    code: 'RATE_LIMITED',
    retryable: true,
    httpStatus: 503,
  },
  { name: 'InternalError', input: () => s3Err('InternalError', 500), code: 'INTERNAL', retryable: true },
  {
    name: 'ServiceUnavailable',
    input: () => s3Err('ServiceUnavailable', 503),
    code: 'SERVICE_UNAVAILABLE',
    retryable: true,
  },
  {
    name: 'RequestTimeout',
    input: () => s3Err('RequestTimeout', 400),
    code: 'TIMEOUT',
    retryable: true,
    httpStatus: 400,
  },
  {
    name: 'RequestTimeTooSkewed',
    input: () => s3Err('RequestTimeTooSkewed', 403),
    code: 'CLOCK_SKEW',
    retryable: false,
  },
  {
    name: 'ExpiredToken',
    input: () => s3Err('ExpiredToken', 400),
    code: 'CREDENTIALS_EXPIRED',
    retryable: false,
  },
  {
    name: 'AccessDenied',
    input: () => s3Err('AccessDenied', 403),
    code: 'FORBIDDEN',
    retryable: false,
    httpStatus: 403,
  },
  {
    name: 'NoSuchKey',
    input: () => s3Err('NoSuchKey', 404),
    code: 'NOT_FOUND',
    retryable: false,
    httpStatus: 404,
  },
  { name: 'NoSuchBucket', input: () => s3Err('NoSuchBucket', 404), code: 'NOT_FOUND', retryable: false },
  { name: 'InvalidRange', input: () => s3Err('InvalidRange', 416), code: 'INVALID_RANGE', retryable: false },
  {
    name: 'PreconditionFailed',
    input: () => s3Err('PreconditionFailed', 412),
    code: 'PRECONDITION_FAILED',
    retryable: false,
  },
  {
    name: 'NotModified',
    input: () => s3Err('NotModified', 304),
    code: 'NOT_MODIFIED',
    retryable: false,
    httpStatus: 304,
  },
  {
    name: 'an S3 code in a `Code` field (parsed error XML)',
    input: () => ({ Code: 'SlowDown', Message: 'Please reduce your request rate.', status: 503 }),
    code: 'RATE_LIMITED',
    retryable: true,
  },
];

const abortCases: Case[] = [
  { name: 'AbortError DOMException', input: () => domError('AbortError'), code: 'ABORTED', retryable: false },
  {
    name: 'TimeoutError DOMException',
    input: () => domError('TimeoutError'),
    code: 'TIMEOUT',
    retryable: true,
  },
  {
    name: 'an Error named AbortError',
    input: () => Object.assign(new Error('aborted'), { name: 'AbortError' }),
    code: 'ABORTED',
    retryable: false,
  },
  {
    name: 'AbortError caused by a TimeoutError',
    input: () => Object.assign(new Error('aborted'), { name: 'AbortError', cause: domError('TimeoutError') }),
    code: 'TIMEOUT',
    retryable: true,
  },
  { name: 'ABORT_ERR code', input: () => sysErr('ABORT_ERR'), code: 'ABORTED', retryable: false },
];

const circular: Record<string, unknown> = { message: 'loop' };
circular.self = circular;

const nonErrorCases: Case[] = [
  { name: 'a string', input: () => 'something broke', code: 'UNKNOWN', retryable: false },
  { name: 'a number', input: () => 42, code: 'UNKNOWN', retryable: false },
  { name: 'null', input: () => null, code: 'UNKNOWN', retryable: false },
  { name: 'undefined', input: () => undefined, code: 'UNKNOWN', retryable: false },
  { name: 'a plain object', input: () => ({ reason: 'nope' }), code: 'UNKNOWN', retryable: false },
  { name: 'an object with a circular reference', input: () => circular, code: 'UNKNOWN', retryable: false },
  { name: 'a symbol', input: () => Symbol('s'), code: 'UNKNOWN', retryable: false },
  { name: 'a bigint', input: () => 10n, code: 'UNKNOWN', retryable: false },
  { name: 'a plain Error', input: () => new Error('plain'), code: 'UNKNOWN', retryable: false },
  {
    name: 'an object whose getters throw',
    input: () =>
      new Proxy(
        {},
        {
          get() {
            throw new Error('trap');
          },
        },
      ),
    code: 'UNKNOWN',
    retryable: false,
  },
];

const allCases = [...systemCases, ...undiciCases, ...httpCases, ...s3Cases, ...abortCases, ...nonErrorCases];

describe('classify', () => {
  it('covers at least 60 mappings', () => {
    expect(allCases.length).toBeGreaterThanOrEqual(60);
  });

  it.each(allCases.map((c) => [c.name, c] as const))('maps %s', (_name, c) => {
    const err = classify(c.input());
    expect(isKeelError(err)).toBe(true);
    expect(err.code).toBe(c.code);
    expect(err.retryable).toBe(c.retryable);
    if (c.kind) expect(err.kind).toBe(c.kind);
    if (c.httpStatus) expect(err.httpStatus).toBe(c.httpStatus);
    expect(typeof err.message).toBe('string');
    expect(err.fingerprint).toMatch(/^[0-9a-f]{16}$/);
  });

  it('maps a real listen on a taken port to ADDRESS_IN_USE with the address', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const { port } = taken.address() as net.AddressInfo;
    const second = net.createServer();
    const failure = await new Promise<unknown>((resolve) => {
      second.once('error', resolve);
      second.listen(port, '127.0.0.1');
    });
    await new Promise((r) => taken.close(r));
    const err = classify(failure);
    expect(err.code).toBe('ADDRESS_IN_USE');
    expect(err.details).toMatchObject({ address: '127.0.0.1', port });
    expect(err.message).toContain(`127.0.0.1:${port}`);
  });

  it('maps a real listen on an address this machine does not have to ADDRESS_NOT_AVAILABLE', async () => {
    const server = net.createServer();
    // 192.0.2.0/24 is TEST-NET-1, reserved for documentation: never a local address.
    const failure = await new Promise<unknown>((resolve) => {
      server.once('error', resolve);
      server.listen(0, '192.0.2.1');
    });
    const err = classify(failure);
    expect(err.code).toBe('ADDRESS_NOT_AVAILABLE');
    expect(err).toMatchObject({ kind: 'permanent', retryable: false, hints: ['manual'] });
    expect(err.message).toContain('192.0.2.1');
  });

  it('returns a KeelError unchanged (idempotent)', () => {
    const first = classify(sysErr('ECONNRESET'));
    expect(classify(first)).toBe(first);
    expect(classify(classify(first))).toBe(first);
  });

  it('keeps the original failure as the cause', () => {
    const original = sysErr('ENOSPC');
    expect(classify(original).cause).toBe(original);
  });

  it('reads Retry-After in seconds into details.retryAfterMs', () => {
    const err = classify({ status: 503, headers: { 'Retry-After': '7' } });
    expect(err.details.retryAfterMs).toBe(7000);
  });

  it('reads Retry-After as an HTTP date', () => {
    const at = new Date(Date.now() + 60_000).toUTCString();
    const err = classify({ status: 429, headers: new Headers({ 'retry-after': at }) });
    expect(err.details.retryAfterMs).toBeGreaterThan(55_000);
    expect(err.details.retryAfterMs).toBeLessThanOrEqual(60_000);
  });

  it('ignores an unreadable Retry-After', () => {
    expect(
      classify({ status: 503, headers: { 'retry-after': 'soon' } }).details.retryAfterMs,
    ).toBeUndefined();
  });

  it('keeps system error details (syscall, path) for the message reader', () => {
    const err = classify(
      Object.assign(new Error('ENOSPC: write'), { code: 'ENOSPC', syscall: 'write', path: '/var/cache/x' }),
    );
    expect(err.details).toMatchObject({ errorCode: 'ENOSPC', syscall: 'write', path: '/var/cache/x' });
    expect(err.message).toContain('no space left');
  });

  it('redacts secrets from foreign messages', () => {
    const err = classify(new Error('GET https://b.s3.amazonaws.com/k?X-Amz-Signature=deadbeef failed'));
    expect(err.message).not.toContain('deadbeef');
  });
});

describe('real fetch failures', () => {
  it('a refused connection through fetch() is CONNECTION_REFUSED and retryable', async () => {
    const net = await import('node:net');
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    await new Promise((r) => server.close(r));
    const err = await fetch(`http://127.0.0.1:${port}/`).catch((e: unknown) => e);
    expect(classify(err)).toMatchObject({ code: 'CONNECTION_REFUSED', retryable: true });
  });

  it('a port fetch() refuses to use is a clear, non-retryable input error', async () => {
    const err = await fetch('http://127.0.0.1:1/').catch((e: unknown) => e);
    expect(classify(err)).toMatchObject({ code: 'INVALID_INPUT', retryable: false });
    expect(classify(err).message).toMatch(/bad ports/);
  });
});

describe('helpers', () => {
  it('isRetryable and httpStatusOf read the classification', () => {
    expect(isRetryable(sysErr('ECONNRESET'))).toBe(true);
    expect(isRetryable(sysErr('ENOENT'))).toBe(false);
    expect(httpStatusOf({ status: 429 })).toBe(429);
    expect(httpStatusOf('x')).toBe(500);
  });

  it('wrap gives a new code and message and keeps the cause', () => {
    const cause = sysErr('ENOSPC');
    const err = wrap(cause, 'METADATA_CORRUPTED', 'could not write meta.json of bucket/key');
    expect(err.code).toBe('METADATA_CORRUPTED');
    expect(err.message).toBe('could not write meta.json of bucket/key');
    expect(err.cause).toBe(cause);
    expect(err.details.causeCode).toBe('DISK_FULL');
  });

  it('keelError takes defaults from the code catalogue and accepts overrides', () => {
    const open = keelError('CIRCUIT_OPEN', 'breaker s3 is open');
    expect(open).toMatchObject({ kind: 'transient', retryable: false, httpStatus: 503, hints: ['fallback'] });
    const custom = keelError('MY_CODE', 'mine', { a: 1 }, { retryable: true, httpStatus: 418 });
    expect(custom).toMatchObject({ code: 'MY_CODE', kind: 'permanent', retryable: true, httpStatus: 418 });
    expect(custom.details).toEqual({ a: 1 });
  });

  it('keelError with stack: false captures no stack frames', () => {
    const err = keelError('CIRCUIT_OPEN', 'open', undefined, { stack: false });
    expect(err.stack?.split('\n').length).toBe(1);
    expect(Error.stackTraceLimit).toBeGreaterThan(0);
  });

  it('isKeelError checks the brand property, not the prototype', () => {
    const foreign = { isKeelError: true, code: 'TIMEOUT', message: 'from another copy of keel' };
    expect(isKeelError(foreign)).toBe(true);
    expect(isKeelError(new Error('x'))).toBe(false);
    expect(isKeelError({ isKeelError: 'yes', code: 'X' })).toBe(false);
    expect(new KeelError('TIMEOUT', 't')).toBeInstanceOf(Error);
  });
});
