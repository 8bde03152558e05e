import { access } from 'node:fs/promises';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { RangeCache, type VerifyReport } from 'keel/cache';
import { keelError } from 'keel';

/** Files younger than this are left to whoever may be writing them (a running gateway). */
const GRACE_SECONDS = 60;

interface CacheCommandOptions {
  dir: string;
  json?: boolean;
  fix?: boolean;
  sliceBytes?: string;
}

/**
 * Opens the cache at `--dir` without cleaning it up: the command's own walk (cleanup, verify --fix)
 * then does the repairs and counts them in its report, and leaves files younger than the cache's
 * grace period alone, as a gateway may be writing them right now.
 */
async function openExisting(options: CacheCommandOptions): Promise<RangeCache> {
  try {
    await access(options.dir);
  } catch {
    throw keelError('INVALID_CONFIG', `--dir ${options.dir}: no such cache directory`);
  }
  const sliceBytes = options.sliceBytes === undefined ? undefined : Number(options.sliceBytes);
  if (sliceBytes !== undefined && !(Number.isSafeInteger(sliceBytes) && sliceBytes > 0)) {
    throw keelError(
      'INVALID_CONFIG',
      `--slice-bytes must be a positive integer, got ${options.sliceBytes ?? ''}`,
    );
  }
  return RangeCache.open({
    dir: options.dir,
    cleanupOnOpen: false,
    cleanupGraceMs: GRACE_SECONDS * 1000,
    ...(sliceBytes === undefined ? {} : { sliceBytes }),
  });
}

function print(options: CacheCommandOptions, value: object, lines: string[]): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${lines.join('\n')}\n`);
}

/** `keel cache stats|verify|cleanup --dir DIR [--json]`. */
export function registerCacheCommand(program: Command): void {
  const cache = program.command('cache').description('inspect, verify and clean a range cache directory');
  const common = (c: Command): Command =>
    c
      .requiredOption('--dir <dir>', 'the cache directory')
      .option('--json', 'print machine-readable JSON')
      .option('--slice-bytes <n>', 'slice size the cache was written with (default 8 MiB)');

  common(cache.command('stats').description('size, objects, slices and repair counters')).action(
    async (options: CacheCommandOptions) => {
      const c = await openExisting(options);
      const s = c.stats();
      await c.close();
      print(options, s, [
        `objects: ${s.objects}`,
        `slices: ${s.slices}`,
        `size: ${s.sizeBytes} bytes`,
        ...Object.entries(s.repairs).map(([k, v]) => `${k}: ${v}`),
      ]);
    },
  );

  common(cache.command('verify').description('check every metadata file and every slice checksum'))
    .option('--fix', 'repair what is found (delete corrupt entries and slices, clean up)')
    .action(async (options: CacheCommandOptions) => {
      const c = await openExisting(options);
      const bar =
        process.stderr.isTTY && !options.json
          ? new cliProgress.SingleBar(
              { format: 'verifying {bar} {value}/{total} objects', stream: process.stderr },
              cliProgress.Presets.shades_classic,
            )
          : undefined;
      let started = false;
      const report: VerifyReport = await c.verify({
        fix: options.fix ?? false,
        onProgress: (done, total) => {
          if (!bar) return;
          if (!started) {
            bar.start(total, 0);
            started = true;
          }
          bar.update(done);
        },
      });
      bar?.stop();
      await c.close();
      print(options, report, [
        `objects scanned: ${report.objectsScanned}`,
        `slices checked: ${report.slicesChecked} (${report.bytesChecked} bytes)`,
        `checksum failures: ${report.checksumFailures}`,
        `missing slices: ${report.missingSlices}`,
        `corrupt metadata: ${report.corruptMetadata}`,
        `orphaned files: ${report.orphanedFiles}`,
        `partial writes: ${report.partialWrites}`,
        report.fixed ? 'repaired.' : 'nothing changed (run with --fix to repair).',
      ]);
      const problems =
        report.checksumFailures +
        report.missingSlices +
        report.corruptMetadata +
        report.orphanedFiles +
        report.partialWrites;
      if (problems > 0 && !report.fixed) process.exitCode = 3;
    });

  common(
    cache
      .command('cleanup')
      .description('remove .tmp files, orphaned slices and references to missing slices'),
  ).action(async (options: CacheCommandOptions) => {
    const c = await openExisting(options);
    const report = await c.cleanup();
    await c.close();
    print(options, report, [
      `objects scanned: ${report.objectsScanned}`,
      `partial writes removed: ${report.partialWrites}`,
      `orphaned files removed: ${report.orphanedFiles}`,
      `inconsistencies fixed: ${report.inconsistenciesFixed}`,
      `corrupt metadata removed: ${report.corruptMetadata}`,
      `(.tmp and unreferenced files younger than ${GRACE_SECONDS} s were left alone: a gateway may be writing them)`,
    ]);
  });
}
