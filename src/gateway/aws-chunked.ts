import { Transform, type TransformCallback } from 'node:stream';

/**
 * Decodes an `aws-chunked` body (`<hex-size>[;chunk-signature=…]\r\n<data>\r\n`…, a zero chunk,
 * optional trailers) into its payload.
 */
export function decodeAwsChunked(): Transform {
  let buf: Buffer = Buffer.alloc(0);
  let remaining = 0; // data bytes left in the current chunk
  let skipCrlf = false;
  let done = false;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      try {
        while (!done) {
          if (remaining > 0) {
            if (buf.length === 0) break;
            const take = Math.min(remaining, buf.length);
            this.push(buf.subarray(0, take));
            buf = buf.subarray(take);
            remaining -= take;
            if (remaining === 0) skipCrlf = true;
            continue;
          }
          if (skipCrlf) {
            if (buf.length < 2) break;
            buf = buf.subarray(2);
            skipCrlf = false;
          }
          const eol = buf.indexOf('\r\n');
          if (eol === -1) break;
          const line = buf.subarray(0, eol).toString('latin1');
          const size = parseInt(line.split(';')[0] ?? '', 16);
          if (!Number.isFinite(size) || size < 0)
            throw new Error(`malformed aws-chunked chunk header: ${line.slice(0, 40)}`);
          buf = buf.subarray(eol + 2);
          if (size === 0) done = true;
          else remaining = size;
        }
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}
