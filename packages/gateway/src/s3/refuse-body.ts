import type { IncomingMessage, ServerResponse } from 'node:http';
import { systemClock, type Clock } from 'keel';
import { sendS3Error, writeS3ErrorHead, type S3ErrorSpec } from './s3-error.js';

/** A refused body is still read and dropped, up to this many bytes after the refusal… */
const MAX_DISCARDED_BODY_BYTES = 256 * 1024 * 1024;
/** …and for at most this long (nginx's `lingering_time`); then the connection is closed regardless. */
const MAX_DISCARD_MS = 30_000;

/**
 * Answers `spec` (with `Connection: close`) to a request whose body is refused while the client
 * may still be sending it. The answer goes out whole at once, but the response, and with it the
 * connection, ends only once the rest of the body has been read and dropped: closing a socket with
 * unread bytes resets it, and a client still writing would see ECONNRESET or EPIPE instead of the
 * answer. A body that goes on past {@link MAX_DISCARDED_BODY_BYTES} or {@link MAX_DISCARD_MS} is
 * cut off, as nginx's lingering close does (`clock` times the latter).
 */
export function refuseBody(
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  spec: S3ErrorSpec,
  requestId: string,
  clock: Clock = systemClock,
): void {
  const closing: S3ErrorSpec = { ...spec, headers: { ...spec.headers, connection: 'close' } };
  // Whatever read the body until now (a checker, the origin request) gets no more of it.
  req.unpipe();
  if (req.complete || req.destroyed || res.headersSent || method === 'HEAD') {
    req.resume();
    sendS3Error(res, method, closing, requestId);
    return;
  }
  // Node closes the socket as soon as a `Connection: close` response ends: written, not ended.
  res.write(writeS3ErrorHead(res, method, closing, requestId) ?? '');
  let discarded = 0;
  let ended = false;
  const end = (): void => {
    if (ended) return;
    ended = true;
    timer.cancel();
    req.off('data', drop);
    res.end();
  };
  const drop = (chunk: Buffer): void => {
    discarded += chunk.length;
    if (discarded > MAX_DISCARDED_BODY_BYTES) end();
  };
  const timer = clock.setTimer(MAX_DISCARD_MS, end);
  req.on('data', drop);
  // A stream paused when it was unpiped does not flow again for a new 'data' listener alone.
  req.resume();
  req.once('end', end);
  req.once('error', end);
  req.once('close', end);
}

/** True when the request says a body follows (a Content-Length above 0, or a transfer coding). */
export function announcesBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}
