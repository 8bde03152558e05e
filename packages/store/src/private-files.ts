import { chmodSync, closeSync, constants, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/** Permission bits keel gives the files it creates (owner read and write only). */
export const PRIVATE_FILE_MODE = 0o600;
/** Permission bits keel gives the directories it creates (owner only). */
export const PRIVATE_DIR_MODE = 0o700;

/**
 * Says that a file of keel's was readable or writable by other users and was made private:
 * a process warning (code `KEEL_FILE_MODE_FIXED`), which Node prints to stderr and a process can
 * route to its logger with `process.on('warning', …)`.
 */
export function warnFileModeFixed(file: string, previousMode: number): void {
  process.emitWarning(
    `${file} was accessible to other users (mode ${previousMode.toString(8).padStart(4, '0')}); changed it to 0600`,
    { code: 'KEEL_FILE_MODE_FIXED' },
  );
}

/** Makes an existing file private when group or others have any access; says so. */
function fixMode(file: string): void {
  let mode: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) return;
    mode = st.mode & 0o777;
  } catch {
    return;
  }
  if ((mode & 0o077) === 0) return;
  chmodSync(file, PRIVATE_FILE_MODE);
  warnFileModeFixed(file, mode);
}

/**
 * Prepares a SQLite file keel creates or opens for writing (not `:memory:` or `''`, which are
 * none): missing parent directories are created
 * 0700, a missing file is created empty with mode 0600 (SQLite gives its `-wal` and `-shm` files
 * the database file's mode), and an existing file, `-wal` or `-shm` that other users can access is
 * made 0600, with a warning (see {@link warnFileModeFixed}).
 */
export function preparePrivateSqliteFile(file: string): void {
  // SQLite's in-memory and temporary databases are no file: nothing to create or protect.
  if (file === ':memory:' || file === '') return;
  mkdirSync(dirname(file), { recursive: true, mode: PRIVATE_DIR_MODE });
  try {
    closeSync(openSync(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, PRIVATE_FILE_MODE));
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  for (const f of [file, `${file}-wal`, `${file}-shm`]) fixMode(f);
}
