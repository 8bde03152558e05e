/**
 * The one place where the compatibility harness names keel's own source files. The repository's
 * layout is changing (npm workspaces); when a path below moves, this file is the only one to edit.
 * Both are loaded at run time, not imported statically, so a moved file makes the harness stop
 * with a message naming this file rather than break the type check of the whole repository.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The repository root (two levels above this file). */
export const KEEL_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** keel's command line, run with `node --import tsx <entry> gateway …`, relative to {@link KEEL_ROOT}. */
export const KEEL_CLI_ENTRY = 'packages/gateway/src/cli/main.ts';

/** The module with `fixS3rver()`, the patches keel's demo and tests apply to s3rver, relative to {@link KEEL_ROOT}. */
export const S3RVER_FIXES_MODULE = 'packages/gateway/src/demo/s3rver-fixes.ts';

/**
 * The absolute path of a keel source file named above.
 * @throws when the file is not there (the message says which constant to update).
 */
export function keelSourcePath(relative: string): string {
  const absolute = path.join(KEEL_ROOT, relative);
  if (!existsSync(absolute))
    throw new Error(
      `keel source file ${relative} not found under ${KEEL_ROOT}: the repository layout changed; ` +
        `update the path in bench/compat/keel-source.ts`,
    );
  return absolute;
}

/**
 * Loads keel's s3rver patches (`fixS3rver`), which the harness's origin applies as keel's own
 * demo origin does.
 * @throws when the module is missing or no longer exports `fixS3rver`.
 */
export async function loadS3rverFixes(): Promise<() => void> {
  const url = pathToFileURL(keelSourcePath(S3RVER_FIXES_MODULE)).href;
  const mod = (await import(url)) as { fixS3rver?: unknown };
  if (typeof mod.fixS3rver !== 'function')
    throw new Error(
      `${S3RVER_FIXES_MODULE} no longer exports fixS3rver(); update bench/compat/keel-source.ts`,
    );
  return mod.fixS3rver as () => void;
}
