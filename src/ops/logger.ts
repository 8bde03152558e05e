import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { correlationId, redactString } from '../errors/index.js';

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
 * A pino logger: JSON lines with the current correlation id (see `withCorrelation`) on every
 * line, secrets censored by key and removed from messages, pretty output on a terminal.
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
        const redacted = args.map((a) => (typeof a === 'string' ? redactString(a) : a)) as typeof args;
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
