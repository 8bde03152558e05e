import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { correlationId, redact, redactString } from 'keel';

/** Options of {@link createLogger}. */
export interface LoggerFactoryOptions {
  /** Default `info` (or `LOG_LEVEL`). */
  level?: string;
  /** Component name on every line. */
  name?: string;
  /** Pretty output through pino-pretty: default only when stdout is a terminal and it can be loaded. */
  pretty?: boolean;
  /** Where lines go (default stdout). A destination turns pretty output off. */
  destination?: DestinationStream;
  /** Extra paths to censor, pino syntax (e.g. `req.headers.cookie`). */
  redactPaths?: string[];
}

const DEFAULT_REDACT = [
  'password',
  'token',
  'secret',
  'authorization',
  '*.password',
  '*.token',
  '*.secret',
  '*.authorization',
  '*.secretAccessKey',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
];

function prettyStream(): DestinationStream | undefined {
  try {
    const require = createRequire(import.meta.url);
    const pretty = require('pino-pretty') as (o: object) => DestinationStream;
    return pretty({ colorize: true });
  } catch {
    return undefined;
  }
}

/**
 * Strings lose secret-looking text; objects are copied with secrets removed at any depth (by key
 * and by content), Errors keep their type, stack and cause for pino's serializer, redacted.
 */
function redactArgument(arg: unknown): unknown {
  if (typeof arg === 'string') return redactString(arg);
  if (arg === null || typeof arg !== 'object') return arg;
  if (arg instanceof Error) return redactedError(arg);
  const out = redact(arg) as Record<string, unknown>;
  // pino serialises `err` with its stack when it is an Error: keep that for errors under `err`.
  const err = (arg as { err?: unknown }).err;
  if (err instanceof Error) out.err = redactedError(err);
  return out;
}

function redactedError(err: Error): Error {
  const copy = new Error(redactString(err.message), { cause: redact(err.cause) });
  copy.name = err.name;
  if (err.stack !== undefined) copy.stack = redactString(err.stack);
  const own: Record<string, unknown> = {};
  for (const key of Object.keys(err)) own[key] = (err as unknown as Record<string, unknown>)[key];
  Object.assign(copy, redact(own));
  return copy;
}

/**
 * A pino logger: JSON lines with the current correlation id (see `withCorrelation`) on every
 * line, secrets censored by key at any depth and removed from text, pretty output on a terminal.
 */
export function createLogger(options: LoggerFactoryOptions = {}): Logger {
  const config: LoggerOptions = {
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    redact: { paths: [...DEFAULT_REDACT, ...(options.redactPaths ?? [])], censor: '[REDACTED]' },
    mixin() {
      const id = correlationId();
      return id === undefined ? {} : { correlationId: id };
    },
    hooks: {
      logMethod(args, method) {
        const redacted = args.map(redactArgument) as typeof args;
        method.apply(this, redacted);
      },
    },
  };
  if (options.name !== undefined) config.name = options.name;
  if (options.destination) return pino(config, options.destination);
  const wantPretty = options.pretty ?? process.stdout.isTTY;
  const pretty = wantPretty ? prettyStream() : undefined;
  return pretty ? pino(config, pretty) : pino(config);
}
