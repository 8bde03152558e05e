import type { Command } from 'commander';
import { keelError } from 'keel';
import {
  credentialsFromEnv,
  describeProgress,
  downloadFile,
  ProgressTracker,
  S3Client,
  showProgress,
  uploadFile,
} from '@keel/transfer';

interface TransferCommandOptions {
  endpoint?: string;
  region?: string;
  partSize?: string;
  concurrency?: string;
}

/** Parses `s3://bucket/key`. */
export function parseS3Url(value: string, what: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(value);
  if (!m?.[1] || !m[2])
    throw keelError('INVALID_INPUT', `${what} must be s3://bucket/key, got ${JSON.stringify(value)}`);
  return { bucket: m[1], key: m[2] };
}

function clientFrom(options: TransferCommandOptions): S3Client {
  const region = options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
  const endpoint =
    options.endpoint ??
    process.env.AWS_ENDPOINT_URL_S3 ??
    process.env.AWS_ENDPOINT_URL ??
    `https://s3.${region}.amazonaws.com`;
  const credentials = credentialsFromEnv();
  return new S3Client({ endpoint, region, ...(credentials ? { credentials } : {}) });
}

function positiveInt(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw keelError('INVALID_INPUT', `${flag} must be a positive integer, got ${value}`);
  return n;
}

const withS3Options = (c: Command): Command =>
  c
    .option('--endpoint <url>', 'S3 endpoint (default: AWS_ENDPOINT_URL, else AWS for the region)')
    .option('--region <region>', 'AWS region (default: AWS_REGION or us-east-1)');

/** `keel get s3://bucket/key FILE` and `keel put FILE s3://bucket/key`, resuming when run again. */
export function registerTransferCommands(program: Command): void {
  withS3Options(
    program
      .command('get')
      .description('download an S3 object to a file; run again to resume an interrupted download')
      .argument('<source>', 's3://bucket/key')
      .argument('<file>', 'destination file'),
  ).action(async (source: string, file: string, options: TransferCommandOptions) => {
    const { bucket, key } = parseS3Url(source, 'source');
    const progress = new ProgressTracker();
    const stop = showProgress(progress, { label: `get ${key}`, logEveryMs: 10_000 });
    try {
      const r = await downloadFile({ client: clientFrom(options), bucket, key, file, progress });
      stop();
      process.stderr.write(
        `${file}: ${r.size} bytes${r.resumedFrom > 0 ? `, resumed from byte ${r.resumedFrom}` : ''}${r.resumes > 0 ? `, ${r.resumes} broken connection(s) resumed` : ''}${r.checksumVerified ? ', MD5 verified' : ''} (${describeProgress(progress.snapshot())})\n`,
      );
    } finally {
      stop();
    }
  });

  withS3Options(
    program
      .command('put')
      .description('upload a file to S3 as a resumable multipart upload; run again to resume')
      .argument('<file>', 'file to upload')
      .argument('<destination>', 's3://bucket/key')
      .option('--part-size <bytes>', 'part size in bytes (default 8 MiB)')
      .option('--concurrency <n>', 'parts in flight (default 4)'),
  ).action(async (file: string, destination: string, options: TransferCommandOptions) => {
    const { bucket, key } = parseS3Url(destination, 'destination');
    const partBytes = positiveInt(options.partSize, '--part-size', 8 * 1024 * 1024);
    const concurrency = positiveInt(options.concurrency, '--concurrency', 4);
    const progress = new ProgressTracker();
    const stop = showProgress(progress, { label: `put ${key}`, logEveryMs: 10_000 });
    try {
      const r = await uploadFile({
        client: clientFrom(options),
        bucket,
        key,
        file,
        partBytes,
        concurrency,
        progress,
      });
      stop();
      process.stderr.write(
        `s3://${bucket}/${key}: ${r.size} bytes in ${r.parts} parts${r.partsReused > 0 ? ` (${r.partsReused} reused from an earlier run)` : ''}, ETag ${r.etag}\n`,
      );
    } finally {
      stop();
    }
  });
}
