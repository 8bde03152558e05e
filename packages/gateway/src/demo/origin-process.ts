/**
 * The demo's origin in a process of its own, started by {@link startDemoOrigin} (origin-supervisor.ts):
 * s3rver with keel's patches (s3rver-fixes.ts) on 127.0.0.1, storing into the directory it is
 * given, with a `demo` bucket. Whatever s3rver throws ends this process, never the gateway's; the
 * parent starts it again on the same port.
 *
 * Arguments: `<directory> <port>` (port 0: one the system picks). Once listening it sends the
 * parent `{ listening: port }` over IPC. It ends when the parent disconnects (the parent stops it,
 * or died) and then removes the directory, which a parent that died cannot do.
 */
import { rm } from 'node:fs/promises';
import S3rver from 's3rver';
import { classify } from 'keel';
import { fixS3rver } from './s3rver-fixes.js';

const [directory, portText] = process.argv.slice(2);
const send = process.send?.bind(process);
if (directory === undefined || portText === undefined || !/^\d+$/.test(portText) || !send) {
  process.stderr.write('origin-process: started by startDemoOrigin() over IPC, with <directory> <port>\n');
  process.exit(2);
}

// Ctrl-C and a service manager's SIGTERM reach the whole process group: the parent drains the
// gateway first, which needs its origin until the end, and then disconnects.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);
process.on('disconnect', () => {
  void rm(directory, { recursive: true, force: true }).finally(() => process.exit(0));
});

fixS3rver();
const server = new S3rver({
  port: Number(portText),
  address: '127.0.0.1',
  silent: true,
  directory,
  configureBuckets: [{ name: 'demo' }],
});
try {
  const { port } = await server.run();
  send({ listening: port });
} catch (err) {
  process.stderr.write(`demo origin: could not listen on 127.0.0.1:${portText}: ${classify(err).message}\n`);
  process.exit(1);
}
