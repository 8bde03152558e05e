import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { OriginResponse } from './origin-client.js';

/** The origin's headers for the client: `extra` over them, without the hop-by-hop ones. */
function forwardHeaders(up: OriginResponse, extra: Record<string, string>): Record<string, string> {
  const headers = { ...up.headers, ...extra };
  delete headers.connection;
  delete headers['keep-alive'];
  delete headers['transfer-encoding'];
  return headers;
}

/** Passes an origin answer through to the client as it is. */
function relay(res: ServerResponse, up: OriginResponse, extra: Record<string, string>): void {
  res.writeHead(up.status, forwardHeaders(up, extra));
  up.body.on('error', () => res.destroy());
  up.body.pipe(res);
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
const MAX_ERROR_BODY_BYTES = 64 * 1024;

/**
 * Relays an origin answer. An S3 error document gets the gateway's request id in its
 * `RequestId` (the one in `x-request-id` and the logs); the origin's stays in `x-amz-request-id`.
 */
export async function relayAnswer(
  res: ServerResponse,
  method: string,
  up: OriginResponse,
  requestId: string,
): Promise<void> {
  const extra = { 'x-request-id': requestId, 'x-keel-cache': 'BYPASS' };
  const length = Number(up.headers['content-length'] ?? 0);
  const isErrorXml =
    up.status >= 400 &&
    method !== 'HEAD' &&
    /xml/.test(up.headers['content-type'] ?? '') &&
    !up.headers['content-encoding'] &&
    length <= MAX_ERROR_BODY_BYTES;
  if (!isErrorXml) {
    relay(res, up, extra);
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
  let text = doc.toString('utf8');
  if (/<Error>[\s\S]*<\/Error>/.test(text)) {
    text = /<RequestId>[^<]*<\/RequestId>/.test(text)
      ? text.replace(/<RequestId>[^<]*<\/RequestId>/, `<RequestId>${requestId}</RequestId>`)
      : text.replace(/<\/Error>(?![\s\S]*<\/Error>)/, `<RequestId>${requestId}</RequestId></Error>`);
  }
  const body = Buffer.from(text, 'utf8');
  res.writeHead(up.status, forwardHeaders(up, { ...extra, 'content-length': String(body.length) }));
  res.end(body);
}
