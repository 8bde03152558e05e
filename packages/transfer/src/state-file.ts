import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';

/** Writes JSON state atomically and durably (tmp file, fsync, rename). */
export async function saveState(file: string, state: unknown): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(JSON.stringify(state));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
}

/** Reads JSON state; undefined when absent or unreadable (a damaged state file means starting over). */
export async function loadState<T>(file: string, valid: (v: unknown) => v is T): Promise<T | undefined> {
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
