import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { BodyRejectedError } from './aws-chunked.js';

/**
 * Passes a body through while hashing it, and fails with `XAmzContentSHA256Mismatch` when its
 * sha256 is not the `x-amz-content-sha256` the client signed. The last piece is held back until
 * the hash is checked, so a receiver that counts on Content-Length never gets a complete bad body.
 */
export function verifyPayloadSha256(expectedHex: string): Transform {
  const hash = createHash('sha256');
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      hash.update(chunk);
      if (held) this.push(held);
      held = chunk;
      cb();
    },
    flush(cb: TransformCallback) {
      const got = hash.digest('hex');
      if (got !== expectedHex.toLowerCase()) {
        cb(
          new BodyRejectedError({
            status: 400,
            code: 'XAmzContentSHA256Mismatch',
            message: "The provided 'x-amz-content-sha256' header does not match what was computed.",
            extra: { ClientComputedContentSHA256: expectedHex, S3ComputedContentSHA256: got },
          }),
        );
        return;
      }
      if (held) this.push(held);
      cb();
    },
  });
}
