import type { IncomingMessage, ServerResponse } from 'node:http';
import { classify } from 'keel';

/** Answers `body` as JSON with `status`, never cached. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res
    .writeHead(status, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
    })
    .end(text);
}

/** Longest query parameter an action takes (ids, names): longer is refused, not cut. */
const MAX_PARAM = 200;

/**
 * The query parameters of an action's URL; the body is drained unread. Answers undefined (after
 * answering 400) when a parameter is longer than {@link MAX_PARAM}.
 */
export function actionParams(req: IncomingMessage, res: ServerResponse): URLSearchParams | undefined {
  req.resume();
  const params = new URL(req.url ?? '/', 'http://admin').searchParams;
  for (const [name, value] of params)
    if (value.length > MAX_PARAM || name.length > MAX_PARAM) {
      sendJson(res, 400, {
        error: `query parameter ${name.slice(0, 40)}: longer than ${MAX_PARAM} characters`,
      });
      return undefined;
    }
  return params;
}

/** Answers a failed action: the error's HTTP status (409 for a state that does not allow it) and message. */
export function sendFailure(res: ServerResponse, what: string, err: unknown): void {
  const error = classify(err);
  const status = error.httpStatus !== undefined && error.httpStatus >= 400 ? error.httpStatus : 500;
  sendJson(res, status, { error: `${what}: ${error.message}`, code: error.code });
}
