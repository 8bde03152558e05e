import { codeInfo, type ErrorKind, type RecoveryHint, type Severity } from './codes.js';
import { correlationId } from './correlation.js';
import { computeFingerprint } from './fingerprint.js';
import { redact, redactString } from './redact.js';

/** Media type of {@link KeelError.toProblem} answers (RFC 9457). */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** Overrides for the defaults that come with an error code. */
export interface KeelErrorOptions {
  cause?: unknown;
  kind?: ErrorKind;
  severity?: Severity;
  retryable?: boolean;
  httpStatus?: number;
  hints?: readonly RecoveryHint[];
  /** Capture a stack trace (default true). Fast rejections pass false: building a stack costs microseconds. */
  stack?: boolean;
  /** Correlation id; defaults to the one of the current context ({@link withCorrelation}). */
  correlationId?: string;
}

/** The JSON form of a KeelError: secrets redacted, no stack. */
export interface KeelErrorJSON {
  name: 'KeelError';
  code: string;
  message: string;
  kind: ErrorKind;
  severity: Severity;
  retryable: boolean;
  httpStatus: number;
  hints: readonly RecoveryHint[];
  details: Record<string, unknown>;
  fingerprint: string;
  correlationId?: string;
  cause?: unknown;
}

/** An RFC 9457 problem details object with keel's extension members. */
export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  severity: Severity;
  retryable: boolean;
  /** What the client can do about it (see `RECOVERY_HINTS`). */
  hints: readonly RecoveryHint[];
  correlationId?: string;
  retryAfterSeconds?: number;
}

const EMPTY_DETAILS: Record<string, unknown> = Object.freeze({});

/**
 * The one error type that crosses keel's module boundaries. Use {@link keelError} to make one and
 * {@link classify} to turn anything thrown into one; test for it with {@link isKeelError}, which
 * checks a property, so two copies of keel agree.
 */
export class KeelError extends Error {
  /** Brand checked by {@link isKeelError}. */
  readonly isKeelError = true as const;
  readonly code: string;
  readonly kind: ErrorKind;
  readonly severity: Severity;
  readonly retryable: boolean;
  readonly httpStatus: number;
  readonly hints: readonly RecoveryHint[];
  readonly details: Record<string, unknown>;
  readonly correlationId: string | undefined;
  private cachedFingerprint: string | undefined;

  constructor(code: string, message: string, details?: Record<string, unknown>, options?: KeelErrorOptions) {
    if (options?.stack === false) {
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 0;
      super(message, options.cause === undefined ? undefined : { cause: options.cause });
      Error.stackTraceLimit = limit;
    } else {
      super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    }
    const defaults = codeInfo(code);
    this.name = 'KeelError';
    this.code = code;
    this.kind = options?.kind ?? defaults.kind;
    this.severity = options?.severity ?? defaults.severity;
    this.retryable = options?.retryable ?? defaults.retryable;
    this.httpStatus = options?.httpStatus ?? defaults.httpStatus;
    this.hints = options?.hints ?? defaults.hints;
    this.details = details ?? EMPTY_DETAILS;
    this.correlationId = options?.correlationId ?? correlationId();
  }

  /**
   * Groups alike failures: the same code, the same message once numbers, ids and paths are taken
   * out, and the same first frame in the caller's code (taken from the cause's stack when there is
   * one) give the same value in every process.
   */
  get fingerprint(): string {
    if (this.cachedFingerprint === undefined) {
      const origin = this.cause instanceof Error && this.cause.stack ? this.cause.stack : this.stack;
      this.cachedFingerprint = computeFingerprint(this.code, this.message, origin);
    }
    return this.cachedFingerprint;
  }

  /** The error as JSON, with every secret redacted (details and the whole cause chain included). */
  toJSON(): KeelErrorJSON {
    const json: KeelErrorJSON = {
      name: 'KeelError',
      code: this.code,
      message: redactString(this.message),
      kind: this.kind,
      severity: this.severity,
      retryable: this.retryable,
      httpStatus: this.httpStatus,
      hints: this.hints,
      details: redact(this.details),
      fingerprint: this.fingerprint,
    };
    if (this.correlationId !== undefined) json.correlationId = this.correlationId;
    if (this.cause !== undefined) json.cause = redact(this.cause);
    return json;
  }

  /** RFC 9457 problem details for an HTTP answer (`application/problem+json`), secrets redacted. */
  toProblem(): ProblemDetails {
    const problem: ProblemDetails = {
      type: `urn:keel:error:${this.code.toLowerCase().replace(/_/g, '-')}`,
      title: codeInfo(this.code).title,
      status: this.httpStatus,
      detail: redactString(this.message),
      code: this.code,
      severity: this.severity,
      retryable: this.retryable,
      hints: this.hints,
    };
    if (this.correlationId !== undefined) problem.correlationId = this.correlationId;
    const retryAfterMs = this.details.retryAfterMs;
    if (typeof retryAfterMs === 'number') problem.retryAfterSeconds = Math.ceil(retryAfterMs / 1000);
    return problem;
  }
}

/**
 * Makes a KeelError with the defaults of `code` (see ERROR_CODES), overridable through `options`.
 * `message` should say what happened, to what, and what to do.
 */
export function keelError(
  code: string,
  message: string,
  details?: Record<string, unknown>,
  options?: KeelErrorOptions,
): KeelError {
  return new KeelError(code, message, details, options);
}

/** True for a KeelError from any copy of keel (checks the brand property, not the prototype). */
export function isKeelError(value: unknown): value is KeelError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { isKeelError?: unknown }).isKeelError === true &&
    typeof (value as { code?: unknown }).code === 'string'
  );
}
