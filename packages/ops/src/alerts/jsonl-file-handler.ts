import { appendFile, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fixFileMode, privateDir, PRIVATE_FILE_MODE } from '../private-files.js';
import type { Alert, AlertHandler } from './types.js';

/** Options of {@link jsonlFileAlertHandler}. */
export interface JsonlFileOptions {
  path: string;
  /** Rotate when the file reaches this size. Default 10 MiB. */
  maxBytes?: number;
  /** Rotated files kept (`path.1` newest … `path.N`). Default 5. */
  keep?: number;
  name?: string;
}

/**
 * Appends alerts as JSON lines, rotating `path` → `path.1` → … when it passes `maxBytes`.
 * Writes are serialised so lines never interleave. The file is created 0600 (its directory 0700);
 * an existing one readable by other users is made 0600 at the first write, with a process warning.
 */
export function jsonlFileAlertHandler(options: JsonlFileOptions): AlertHandler {
  const maxBytes = options.maxBytes ?? 10 * 1024 * 1024;
  const keep = options.keep ?? 5;
  if (!(maxBytes > 0)) throw new Error('alerts.jsonlFile.maxBytes: must be > 0');
  if (!Number.isInteger(keep) || keep < 1) throw new Error('alerts.jsonlFile.keep: must be an integer >= 1');
  let chain: Promise<void> = Promise.resolve();
  let checked = false;

  async function rotateIfNeeded(): Promise<void> {
    let size: number;
    try {
      size = (await stat(options.path)).size;
    } catch {
      return;
    }
    if (size < maxBytes) return;
    await rm(`${options.path}.${String(keep)}`, { force: true });
    for (let i = keep - 1; i >= 1; i--) {
      await rename(`${options.path}.${String(i)}`, `${options.path}.${String(i + 1)}`).catch(() => undefined);
    }
    await rename(options.path, `${options.path}.1`);
  }

  async function write(alerts: readonly Alert[]): Promise<void> {
    await privateDir(dirname(options.path));
    if (!checked) {
      checked = true;
      await fixFileMode(options.path);
    }
    await rotateIfNeeded();
    await appendFile(options.path, alerts.map((a) => JSON.stringify(a) + '\n').join(''), {
      mode: PRIVATE_FILE_MODE,
    });
  }

  return {
    name: options.name ?? 'file',
    send(alerts) {
      const next = chain.then(() => write(alerts));
      chain = next.catch(() => undefined);
      return next;
    },
    async close() {
      await chain;
    },
  };
}
