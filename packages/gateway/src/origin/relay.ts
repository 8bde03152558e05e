import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { OriginResponse } from './origin-client.js';
import type { OriginAnswer } from './origin-guard.js';
import { REQUEST_ID_HEADERS } from '../s3/s3-error.js';

/** Where relayed answers note the origin's own request ids (they are the gateway's in the answer). */
export type RelayLog = (
  level: 'info' | 'warn' | 'error',
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/**
 * The origin's headers for the client: without the hop-by-hop ones, labelled `label` (PASS unless
 * said otherwise), and with the gateway's request id as `x-amz-request-id` and `x-amz-id-2` (the
 * same as the `RequestId` of an error document it relays), so every answer names the id that is
 * in the gateway's log.
 */
export function forwardHeaders(
  headers: Record<string, string>,
  requestId: string,
  label = 'PASS',
): Record<string, string> {
  const out: Record<string, string> = { ...headers, 'x-keel-cache': label };
  for (const name of REQUEST_ID_HEADERS) out[name] = requestId;
  delete out.connection;
  delete out['keep-alive'];
  delete out['transfer-encoding'];
  return out;
}

/** Logs the origin's own ids of an answer relayed under the gateway's (at info: one line per relayed answer). */
function noteOriginIds(log: RelayLog | undefined, headers: Record<string, string>, requestId: string): void {
  const originId = headers['x-amz-request-id'];
  if (log === undefined || originId === undefined) return;
  log('info', 'origin request id', {
    requestId,
    originRequestId: originId,
    ...(headers['x-amz-id-2'] === undefined ? {} : { originId2: headers['x-amz-id-2'] }),
  });
}

export async function readAll(body: Readable, limit: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) return undefined;
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

/** Error documents larger than this are relayed as they are. */
export const MAX_ERROR_BODY_BYTES = 64 * 1024;

/** An S3 error document with the gateway's request id in its `RequestId` (added when it has none). */
function withRequestId(doc: Buffer, requestId: string): Buffer {
  let text = doc.toString('utf8');
  if (!/<Error>[\s\S]*<\/Error>/.test(text)) return doc;
  text = /<RequestId>[^<]*<\/RequestId>/.test(text)
    ? text.replace(/<RequestId>[^<]*<\/RequestId>/, `<RequestId>${requestId}</RequestId>`)
    : text.replace(/<\/Error>(?![\s\S]*<\/Error>)/, `<RequestId>${requestId}</RequestId></Error>`);
  return Buffer.from(text, 'utf8');
}

function isErrorDocument(status: number, method: string, headers: Record<string, string>): boolean {
  return (
    status >= 400 &&
    method !== 'HEAD' &&
    /xml/.test(headers['content-type'] ?? '') &&
    !headers['content-encoding']
  );
}

/**
 * Relays an origin answer as it is, labelled PASS (or `label`: DENIED for an origin's refusal in
 * passthrough auth). An S3 error document gets the gateway's request id in its `RequestId`, as
 * in `x-amz-request-id`; the origin's ids go to the log.
 */
export async function relayAnswer(
  res: ServerResponse,
  method: string,
  up: OriginResponse,
  requestId: string,
  log?: RelayLog,
  label = 'PASS',
): Promise<void> {
  noteOriginIds(log, up.headers, requestId);
  const length = Number(up.headers['content-length'] ?? 0);
  if (!isErrorDocument(up.status, method, up.headers) || length > MAX_ERROR_BODY_BYTES) {
    res.writeHead(up.status, forwardHeaders(up.headers, requestId, label));
    up.body.on('error', () => res.destroy());
    up.body.pipe(res);
    return;
  }
  let doc: Buffer | undefined;
  try {
    doc = await readAll(up.body, MAX_ERROR_BODY_BYTES);
  } catch {
    res.destroy();
    return;
  }
  if (doc === undefined) {
    // Larger than any S3 error document: it cannot be relayed whole any more.
    res.destroy();
    return;
  }
  sendDocument(res, up.status, up.headers, withRequestId(doc, requestId), requestId, false, label);
}

/** Relays an origin answer the guard kept (an error it counted as a failure), labelled PASS. */
export function relayBuffered(
  res: ServerResponse,
  method: string,
  answer: OriginAnswer,
  requestId: string,
  log?: RelayLog,
  label = 'PASS',
): void {
  noteOriginIds(log, answer.headers, requestId);
  const body =
    method === 'HEAD'
      ? Buffer.alloc(0)
      : isErrorDocument(answer.status, method, answer.headers)
        ? withRequestId(answer.body, requestId)
        : answer.body;
  sendDocument(res, answer.status, answer.headers, body, requestId, method === 'HEAD', label);
}

function sendDocument(
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  body: Buffer,
  requestId: string,
  head = false,
  label = 'PASS',
): void {
  res.writeHead(status, {
    ...forwardHeaders(headers, requestId, label),
    ...(head ? {} : { 'content-length': String(body.length) }),
  });
  res.end(head ? undefined : body);
}
