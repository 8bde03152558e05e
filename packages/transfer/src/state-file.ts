import { randomBytes } from 'node:crypto';
import { chmod, open, readFile, rename, rm, stat } from 'node:fs/promises';

/** Transfer state (bucket, key, upload id, parts) is its owner's only: mode 0600. */
const PRIVATE_FILE_MODE = 0o600;

/** Writes JSON state atomically and durably (tmp file created 0600, fsync, rename). */
export async function saveState(file: string, state: unknown): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  const handle = await open(tmp, 'wx', PRIVATE_FILE_MODE);
  try {
    await handle.writeFile(JSON.stringify(state));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
}

/**
 * Makes a state file from an earlier run private when other users can access it, with a process
 * warning (code `KEEL_FILE_MODE_FIXED`).
 */
async function fixMode(file: string): Promise<void> {
  let mode: number;
  try {
    mode = (await stat(file)).mode & 0o777;
  } catch {
    return;
  }
  if ((mode & 0o077) === 0) return;
  await chmod(file, PRIVATE_FILE_MODE);
  process.emitWarning(
    `${file} was accessible to other users (mode ${mode.toString(8).padStart(4, '0')}); changed it to 0600`,
    { code: 'KEEL_FILE_MODE_FIXED' },
  );
}

/** Reads JSON state; undefined when absent or unreadable (a damaged state file means starting over). */
export async function loadState<T>(file: string, valid: (v: unknown) => v is T): Promise<T | undefined> {
  await fixMode(file);
  try {
    const value = JSON.parse(await readFile(file, 'utf8')) as unknown;
    return valid(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Removes a state file if present. */
export async function removeState(file: string): Promise<void> {
  await rm(file, { force: true });
}
