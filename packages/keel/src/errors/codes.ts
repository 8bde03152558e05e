/** Who is at fault and whether the failure is expected to pass. */
export type ErrorKind = 'client' | 'server' | 'transient' | 'permanent';

/** How urgently a failure needs attention. */
export type Severity = 'low' | 'medium' | 'high' | 'critical';

/** What a caller can do about a failure. */
export type RecoveryHint =
  'retry' | 'fallback' | 'invalidate-cache' | 'reduce-scope' | 'read-only' | 'manual';

/** What each recovery hint asks of the caller, in a few words (the CLI prints these). */
export const RECOVERY_HINTS: Readonly<Record<RecoveryHint, string>> = Object.freeze({
  retry: 'try again, after a pause; it may pass',
  fallback: 'use a fallback meanwhile (a cached copy, another replica)',
  'invalidate-cache': 'drop what is cached for it and fetch it again',
  'reduce-scope': 'do less at once (smaller batches, fewer in parallel, less memory)',
  'read-only': 'carry on read-only until it is fixed',
  manual: 'a person has to look at it',
});

/** `hint: text; hint: text` for `hints`, or an empty string when there are none. */
export function describeHints(hints: readonly RecoveryHint[]): string {
  return hints.map((h) => `${h}: ${RECOVERY_HINTS[h]}`).join('; ');
}

/** Defaults that come with a code; any of them can be overridden where the error is made. */
export interface CodeInfo {
  readonly kind: ErrorKind;
  readonly severity: Severity;
  readonly retryable: boolean;
  readonly httpStatus: number;
  readonly hints: readonly RecoveryHint[];
  /** A short human title, used as the `title` of problem details. */
  readonly title: string;
}

function info(
  kind: ErrorKind,
  severity: Severity,
  retryable: boolean,
  httpStatus: number,
  hints: readonly RecoveryHint[],
  title: string,
): CodeInfo {
  return Object.freeze({ kind, severity, retryable, httpStatus, hints: Object.freeze([...hints]), title });
}

/**
 * Every code keel itself uses, with its defaults. Codes are stable: they are part of the public
 * API, appear in logs, metrics and problem details, and are never renamed.
 */
export const ERROR_CODES = {
  NETWORK_RESET: info('transient', 'medium', true, 502, ['retry'], 'Connection reset'),
  CONNECTION_REFUSED: info('transient', 'high', true, 503, ['retry', 'fallback'], 'Connection refused'),
  NETWORK_UNREACHABLE: info('transient', 'high', true, 503, ['retry', 'fallback'], 'Network unreachable'),
  DNS_FAILURE: info('transient', 'high', true, 503, ['retry', 'fallback'], 'Name resolution failed'),
  TIMEOUT: info('transient', 'medium', true, 504, ['retry'], 'Timed out'),
  ABORTED: info('client', 'low', false, 499, [], 'Aborted'),
  DISK_FULL: info('server', 'critical', false, 507, ['reduce-scope', 'read-only'], 'Disk full'),
  IO_ERROR: info('server', 'high', false, 500, ['invalidate-cache', 'manual'], 'I/O error'),
  READ_ONLY_FS: info('server', 'critical', false, 500, ['read-only', 'manual'], 'Read-only file system'),
  PERMISSION_DENIED: info('server', 'high', false, 500, ['manual'], 'Permission denied'),
  NOT_FOUND: info('client', 'low', false, 404, [], 'Not found'),
  TOO_MANY_OPEN_FILES: info('transient', 'high', true, 503, ['retry', 'reduce-scope'], 'Too many open files'),
  RESOURCE_BUSY: info('transient', 'medium', true, 503, ['retry'], 'Resource busy'),
  RESOURCE_EXHAUSTED: info(
    'transient',
    'high',
    true,
    503,
    ['reduce-scope', 'retry'],
    'Resource exhausted (memory, buffers, connections)',
  ),
  LOCK_CONFLICT: info('transient', 'medium', true, 409, ['retry'], 'Lock conflict'),
  ADDRESS_IN_USE: info('permanent', 'high', false, 500, ['manual'], 'Address already in use'),
  ADDRESS_NOT_AVAILABLE: info('permanent', 'high', false, 500, ['manual'], 'Address not available'),
  METADATA_CORRUPTED: info('server', 'high', false, 500, ['invalidate-cache'], 'Metadata corrupted'),
  CHECKSUM_MISMATCH: info('server', 'high', true, 500, ['invalidate-cache', 'retry'], 'Checksum mismatch'),
  CIRCUIT_OPEN: info('transient', 'medium', false, 503, ['fallback'], 'Circuit open'),
  BULKHEAD_FULL: info(
    'transient',
    'medium',
    false,
    503,
    ['reduce-scope', 'fallback'],
    'Too many concurrent calls',
  ),
  RETRIES_EXHAUSTED: info('transient', 'high', false, 503, ['fallback'], 'Retries exhausted'),
  RETRY_BUDGET_EXHAUSTED: info('transient', 'high', false, 503, ['fallback'], 'Retry budget exhausted'),
  THROTTLED: info('transient', 'medium', false, 503, ['fallback', 'reduce-scope'], 'Throttled locally'),
  RATE_LIMITED: info('transient', 'medium', true, 429, ['retry', 'reduce-scope'], 'Rate limited'),
  SERVICE_UNAVAILABLE: info('transient', 'high', true, 503, ['retry', 'fallback'], 'Service unavailable'),
  BAD_GATEWAY: info('transient', 'high', true, 502, ['retry', 'fallback'], 'Bad gateway'),
  TOO_EARLY: info('transient', 'low', true, 425, ['retry'], 'Too early'),
  INTERNAL: info('server', 'high', true, 500, ['retry'], 'Internal error'),
  BAD_REQUEST: info('client', 'low', false, 400, [], 'Bad request'),
  UNAUTHORIZED: info('client', 'medium', false, 401, ['manual'], 'Unauthorized'),
  FORBIDDEN: info('client', 'medium', false, 403, ['manual'], 'Forbidden'),
  CONFLICT: info('client', 'low', false, 409, [], 'Conflict'),
  PRECONDITION_FAILED: info('client', 'low', false, 412, ['invalidate-cache'], 'Precondition failed'),
  NOT_MODIFIED: info('client', 'low', false, 304, [], 'Not modified'),
  INVALID_RANGE: info('client', 'low', false, 416, [], 'Invalid range'),
  CLOCK_SKEW: info('client', 'high', false, 403, ['manual'], 'Request time too skewed'),
  CREDENTIALS_EXPIRED: info('client', 'high', false, 400, ['manual'], 'Credentials expired'),
  INVALID_CONFIG: info('permanent', 'critical', false, 500, ['manual'], 'Invalid configuration'),
  INVALID_INPUT: info('client', 'low', false, 400, [], 'Invalid input'),
  STALE_TOKEN: info('permanent', 'low', false, 409, [], 'Stale attempt token'),
  QUEUE_STORE_UNAVAILABLE: info('transient', 'high', true, 503, ['retry'], 'Queue store unavailable'),
  QUEUE_DECRYPT_FAILED: info(
    'permanent',
    'high',
    false,
    500,
    ['manual'],
    'Queue payload could not be decrypted',
  ),
  OBJECT_CHANGED: info('permanent', 'medium', false, 412, ['invalidate-cache', 'retry'], 'Object changed'),
  HTTP_ERROR: info('server', 'medium', false, 500, [], 'HTTP error'),
  UNKNOWN: info('permanent', 'medium', false, 500, ['manual'], 'Unknown error'),
} as const satisfies Record<string, CodeInfo>;

/** A code keel defines. Modules may use codes of their own as plain strings. */
export type ErrorCode = keyof typeof ERROR_CODES;

const FALLBACK_INFO = info('permanent', 'medium', false, 500, [], 'Error');

/** The defaults for `code`; unknown codes are permanent, not retryable, HTTP 500. */
export function codeInfo(code: string): CodeInfo {
  return Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as ErrorCode] : FALLBACK_INFO;
}
