import type { Mapping } from './classify.js';

/**
 * PostgreSQL SQLSTATE codes (as `code` on pg's DatabaseError) that keel treats specially; other
 * codes are looked up by their two-character class in {@link POSTGRES_CLASSES}.
 */
const POSTGRES_CODES: Readonly<Record<string, Mapping>> = {
  '08001': ['CONNECTION_REFUSED', 'the database refused the connection'],
  '08004': ['CONNECTION_REFUSED', 'the database rejected the connection'],
  '57P01': ['SERVICE_UNAVAILABLE', 'the database server is shutting down (admin shutdown)'],
  '57P02': ['SERVICE_UNAVAILABLE', 'the database server crashed'],
  '57P03': ['SERVICE_UNAVAILABLE', 'the database server cannot accept connections yet'],
  '57014': ['TIMEOUT', 'the statement was cancelled (statement timeout or cancel request)'],
  '40001': ['LOCK_CONFLICT', 'the transaction could not be serialised; run it again'],
  '40P01': ['LOCK_CONFLICT', 'the transaction was chosen as a deadlock victim; run it again'],
  '55P03': [
    'LOCK_CONFLICT',
    'a lock could not be acquired in time (lock_timeout or NOWAIT); retry with backoff',
  ],
  '53100': ['DISK_FULL', 'the database server is out of disk space'],
  '53200': ['RESOURCE_EXHAUSTED', 'the database server is out of memory; do less at once'],
  '53300': ['RESOURCE_EXHAUSTED', 'the database server has too many connections; use fewer'],
  '23505': ['CONFLICT', 'a row with this key already exists'],
  '42501': ['PERMISSION_DENIED', 'the database role lacks a privilege'],
  '3D000': ['INVALID_CONFIG', 'the database does not exist; check the connection URL'],
  '28P01': ['UNAUTHORIZED', 'the database rejected the password'],
  '28000': ['UNAUTHORIZED', 'the database rejected the authorization'],
};

const POSTGRES_CLASSES: Readonly<Record<string, Mapping>> = {
  '08': ['NETWORK_RESET', 'the database connection failed'],
  '53': ['RESOURCE_EXHAUSTED', 'the database server is out of resources (connections, memory)'],
  '57': ['SERVICE_UNAVAILABLE', 'the database server stopped the operation'],
  '58': ['IO_ERROR', 'the database server had a system error'],
  '23': ['INVALID_INPUT', 'the row violates a constraint'],
  '22': ['INVALID_INPUT', 'the data is invalid for its column'],
  '42': ['INVALID_INPUT', 'the statement is invalid or names something that does not exist'],
  '28': ['UNAUTHORIZED', 'the database rejected the credentials'],
};

/** pg's own client-side failures, which carry only a message. */
const POSTGRES_MESSAGES: readonly (readonly [RegExp, Mapping])[] = [
  [/^Connection terminated/, ['NETWORK_RESET', 'the database connection was closed']],
  [/not queryable/, ['NETWORK_RESET', 'the database client lost its connection']],
  [/^timeout exceeded when trying to connect/, ['TIMEOUT', 'connecting to the database timed out']],
  [/^Query read timeout/, ['TIMEOUT', 'the database did not answer in time']],
];

/** The mapping for a PostgreSQL (pg) error, or undefined when `e` is not one. */
export function postgresMapping(
  e: Record<string, unknown>,
  name: string,
  code: string,
  message: string,
): Mapping | undefined {
  // pg's DatabaseError carries a SQLSTATE `code` and a `severity` (ERROR, FATAL, PANIC).
  if (typeof e.severity === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    return POSTGRES_CODES[code] ?? POSTGRES_CLASSES[code.slice(0, 2)];
  }
  if (code || name !== 'Error') return undefined;
  for (const [pattern, mapping] of POSTGRES_MESSAGES) if (pattern.test(message)) return mapping;
  return undefined;
}
