/* What the primary and its workers tell each other over node:cluster's IPC channel. */

/** A worker is serving: its S3 endpoint (the shared port) and its own admin server on loopback. */
export interface WorkerReady {
  keel: 'ready';
  s3: string;
  admin: string;
}

/** The primary asks a worker for its metrics… */
export interface MetricsRequest {
  keel: 'metrics';
  req: number;
}

/** …and it answers with its registry as prom-client's JSON, for AggregatorRegistry.aggregate(). */
export interface MetricsReply {
  keel: 'metrics-reply';
  req: number;
  metrics: object[];
}

/** Every message of keel's own carries `keel`, so prom-client's and node's messages pass by. */
export function isKeelMessage(m: unknown): m is { keel: string } {
  return typeof m === 'object' && m !== null && typeof (m as { keel?: unknown }).keel === 'string';
}

/** Environment variable naming a worker's slot (1…N), set by the primary when it forks. */
export const WORKER_SLOT_ENV = 'KEEL_WORKER_SLOT';
