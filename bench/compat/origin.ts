/**
 * The harness's S3 origin: s3rver in a process of its own, on a loopback port chosen by the system,
 * with keel's own s3rver patches (`fixS3rver`, as keel's demo origin has) and three of the
 * harness's, where plain s3rver would break the suite's own cleanup or never answer, each
 * answering as S3 does: ListObjectVersions (s3rver-versions.ts), DeleteObjects of keys that look
 * like numbers (s3rver-delete-objects.ts), and a CompleteMultipartUpload naming a missing part
 * (s3rver-missing-part.ts). keel's patches are applied last, so where they cover the same request
 * they answer it. The same origin serves the direct run and the runs through keel.
 *
 * `node --import tsx bench/compat/origin.ts <directory>` prints `ORIGIN <port>` once listening,
 * `ORIGIN-FAULT <json>` for every exception s3rver leaves unhandled, and stops on SIGTERM.
 *
 * An error s3rver throws outside any request handler would end the process and fail every later
 * test of the run for a reason that has nothing to do with them. Such a fault is reported and the
 * process goes on, so the run records it (and the test it happened in) instead.
 */
import S3rver from 's3rver';
import { loadS3rverFixes } from './keel-source.js';
import { keepDeleteObjectsKeysAsText } from './s3rver-delete-objects.js';
import { refuseMissingParts } from './s3rver-missing-part.js';
import { addListObjectVersions } from './s3rver-versions.js';

const [directory] = process.argv.slice(2);
if (!directory) throw new Error('usage: origin.ts <directory>');

const reportFault = (kind: string, err: unknown): void => {
  const e = err instanceof Error ? err : new Error(String(err));
  const fault = {
    kind,
    atMs: Date.now(),
    message: e.message,
    stack: (e.stack ?? '')
      .split('\n')
      .slice(1, 4)
      .map((l) => l.trim()),
  };
  process.stdout.write(`ORIGIN-FAULT ${JSON.stringify(fault)}\n`);
};
process.on('uncaughtException', (err) => reportFault('uncaughtException', err));
process.on('unhandledRejection', (err) => reportFault('unhandledRejection', err));

addListObjectVersions();
refuseMissingParts();
keepDeleteObjectsKeysAsText();
(await loadS3rverFixes())();
const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory });
const { port } = await s3rver.run();
process.stdout.write(`ORIGIN ${port}\n`);
process.on('SIGTERM', () => {
  s3rver.close(() => process.exit(0));
});
