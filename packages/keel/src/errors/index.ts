/**
 * keel's error model: one {@link KeelError} type with a stable code, kind, severity,
 * retryability, HTTP status and recovery hints; {@link classify} turns any failure into one.
 * @packageDocumentation
 */
export {
  ERROR_CODES,
  RECOVERY_HINTS,
  describeHints,
  codeInfo,
  type CodeInfo,
  type ErrorCode,
  type ErrorKind,
  type RecoveryHint,
  type Severity,
} from './codes.js';
export {
  KeelError,
  keelError,
  isKeelError,
  PROBLEM_CONTENT_TYPE,
  type KeelErrorJSON,
  type KeelErrorOptions,
  type ProblemDetails,
} from './keel-error.js';
export {
  classify,
  isRetryable,
  httpStatusOf,
  wrap,
  SYSTEM_ERRORS,
  UNDICI_ERRORS,
  HTTP_STATUSES,
  S3_ERRORS,
} from './classify.js';
export { redact, redactString, isSecretKey, REDACTED } from './redact.js';
export { parseRetryAfter } from './retry-after.js';
export { withCorrelation, correlationId, newCorrelationId } from './correlation.js';
export { normaliseMessage, callerFrame } from './fingerprint.js';
export {
  ErrorAggregator,
  type AggregatedError,
  type ErrorAggregatorOptions,
  type NowSource,
} from './aggregator.js';
