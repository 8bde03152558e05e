import { chmod, mkdir, stat } from 'node:fs/promises';

/** Permission bits of the files keel's ops part creates (owner read and write only). */
export const PRIVATE_FILE_MODE = 0o600;
/** Permission bits of the directories it creates (owner only). */
export const PRIVATE_DIR_MODE = 0o700;

/** Creates `dir` and missing parents with mode 0700 (existing directories are left as they are). */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/**
 * Makes an existing file private (0600) when other users can read or write it, and says so with a
 * process warning (code `KEEL_FILE_MODE_FIXED`; route it with `process.on('warning', …)`).
 * Resolves with whether it changed anything; a missing file is left alone.
 */
export async function fixFileMode(file: string): Promise<boolean> {
  let mode: number;
  try {
    const st = await stat(file);
    if (!st.isFile()) return false;
    mode = st.mode & 0o777;
  } catch {
    return false;
  }
  if ((mode & 0o077) === 0) return false;
  await chmod(file, PRIVATE_FILE_MODE);
  process.emitWarning(
    `${file} was accessible to other users (mode ${mode.toString(8).padStart(4, '0')}); changed it to 0600`,
    { code: 'KEEL_FILE_MODE_FIXED' },
  );
  return true;
}
