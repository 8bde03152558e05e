/**
 * The benchmarks' S3 origin (s3rver) in a process of its own, as an origin is in production: the
 * benchmark's timing client then never waits behind the origin's work on one event loop.
 * `node --import tsx bench/_s3-origin.ts <directory> <bucket>...` prints `ORIGIN <port>` once
 * listening and stops on SIGTERM.
 */
import S3rver from 's3rver';

const [directory, ...buckets] = process.argv.slice(2);
if (!directory || buckets.length === 0) throw new Error('usage: _s3-origin.ts <directory> <bucket>...');
const s3rver = new S3rver({
  port: 0,
  address: '127.0.0.1',
  silent: true,
  directory,
  configureBuckets: buckets.map((name) => ({ name })),
});
const { port } = (await s3rver.run()) as { port: number };
console.log(`ORIGIN ${port}`);
process.on('SIGTERM', () => {
  s3rver.close(() => process.exit(0));
});
