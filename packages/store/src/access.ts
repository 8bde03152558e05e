import { statSync } from 'node:fs';
import { keelError, type KeelError } from 'keel';

/**
 * How a store may be opened: `create` (the default) creates the file and tables and migrates them;
 * `existing` opens only a store keel already created (migrating an older schema); `read-only`
 * opens an existing store without writing anything (no tables, no migration, no journal mode).
 * Tools that inspect a store (the CLI) use `read-only` or `existing`, so a mistyped path never
 * leaves a new database behind and another application's SQLite file never gets keel's tables.
 */
export type StoreAccess = 'create' | 'existing' | 'read-only';

/** The accesses, for validating input. */
export const STORE_ACCESSES: readonly StoreAccess[] = ['create', 'existing', 'read-only'];

/** Why a store could not be opened as one of keel's: the `reason` detail of a `*_STORE_NOT_FOUND` error. */
export type NotAStoreReason = 'missing' | 'not-a-file' | 'not-sqlite' | 'no-keel-tables' | 'old-schema';

/** Throws INVALID_CONFIG when `access` is not one of {@link STORE_ACCESSES}. */
export function checkAccess(what: string, access: unknown): StoreAccess {
  if (access === undefined) return 'create';
  if (STORE_ACCESSES.includes(access as StoreAccess)) return access as StoreAccess;
  throw keelError(
    'INVALID_CONFIG',
    `${what}: access must be one of ${STORE_ACCESSES.join(', ')}, got ${JSON.stringify(access)}`,
  );
}

/**
 * The error for a store that is not there or is not keel's: `code` is the module's
 * `*_STORE_NOT_FOUND`, the message names the place and says what to do.
 */
export function notAStore(
  code: string,
  what: string,
  location: string,
  reason: NotAStoreReason,
  cause?: unknown,
): KeelError {
  const why: Record<NotAStoreReason, string> = {
    missing: 'the file does not exist',
    'not-a-file': 'it is not a regular file',
    'not-sqlite': 'it is not a SQLite database',
    'no-keel-tables': `it holds no keel ${what} tables`,
    'old-schema': `its ${what} schema is older than this keel; open it once read-write to migrate it`,
  };
  return keelError(
    code,
    `no keel ${what} store at ${location}: ${why[reason]}; check the path (this command never creates or changes a store)`,
    { store: location, reason },
    { kind: 'client', httpStatus: 404, stack: false, ...(cause === undefined ? {} : { cause }) },
  );
}

/**
 * For `existing` and `read-only` access: throws `code` unless `file` is an existing regular file.
 */
export function assertStoreFile(code: string, what: string, file: string): void {
  let isFile: boolean;
  try {
    isFile = statSync(file).isFile();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw notAStore(code, what, file, 'missing');
    throw err;
  }
  if (!isFile) throw notAStore(code, what, file, 'not-a-file');
}

/** True for better-sqlite3's "file is not a database" (a text file, another format). */
export const isNotSqlite = (err: unknown): boolean =>
  (err as { code?: unknown } | null)?.code === 'SQLITE_NOTADB';
