import type { Mapping } from './classify.js';

/**
 * SQLite result codes (better-sqlite3's `SqliteError.code`, extended codes included:
 * `SQLITE_BUSY_SNAPSHOT` is a `SQLITE_BUSY`) that keel maps, by their primary code.
 */
const SQLITE_CODES: Readonly<Record<string, Mapping>> = {
  SQLITE_BUSY: ['LOCK_CONFLICT', 'the database is locked by another connection; retry with backoff'],
  SQLITE_LOCKED: ['LOCK_CONFLICT', 'a table is locked by another statement; retry with backoff'],
  SQLITE_NOMEM: ['RESOURCE_EXHAUSTED', 'SQLite ran out of memory; do less at once'],
  SQLITE_FULL: ['DISK_FULL', 'the database or its disk is full'],
};

/** The mapping for a SQLite error code, or undefined when `code` is not one keel maps. */
export function sqliteMapping(code: string): Mapping | undefined {
  if (!code.startsWith('SQLITE_')) return undefined;
  const primary = /^SQLITE_[A-Z]+/.exec(code)?.[0] ?? code;
  return SQLITE_CODES[primary];
}
