/** `@keel/transfer` as installed: a body that breaks mid-way is resumed from where it broke. */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { ProgressTracker, resumingGet, type RawResponse } from '@keel/transfer';

const object = Buffer.from('0123456789'.repeat(1000));
const asked: number[] = [];
const request = (range: { start: number }): Promise<RawResponse> => {
  asked.push(range.start);
  const rest = object.subarray(range.start);
  // The first answer breaks after 4 000 bytes; the next one sends the rest.
  const body =
    asked.length === 1
      ? new Readable({
          read() {
            this.push(rest.subarray(0, 4000));
            this.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
          },
        })
      : Readable.from([rest]);
  return Promise.resolve({
    status: range.start === 0 ? 200 : 206,
    headers: { etag: '"v1"', 'content-length': String(rest.length) },
    body,
  });
};
const got = await resumingGet({ request });
const chunks: Buffer[] = [];
for await (const chunk of got.body) chunks.push(chunk as Buffer);
assert.ok(Buffer.concat(chunks).equals(object), 'the whole object, once');
assert.deepEqual(asked, [0, 4000]);

const progress = new ProgressTracker({ total: object.length });
progress.add(object.length);
assert.equal(progress.snapshot().percent, 100);
console.log('@keel/transfer: ok');
