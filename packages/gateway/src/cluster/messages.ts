/* What the primary and its workers tell each other over node:cluster's IPC channel. */

/** A worker is serving: its S3 endpoint (the shared port) and its own admin server on loopback. */
export interface WorkerReady {
  keel: 'ready';
  s3: string;
  admin: string;
}

/** Every message of keel's own carries `keel`, so prom-client's and node's messages pass by. */
export function isKeelMessage(m: unknown): m is { keel: string } {
  return typeof m === 'object' && m !== null && typeof (m as { keel?: unknown }).keel === 'string';
}

/** Environment variable naming a worker's slot (1…N), set by the primary when it forks. */
export const WORKER_SLOT_ENV = 'KEEL_WORKER_SLOT';
