import { keelError } from '../errors/index.js';
import type { CacheCounts } from './counters.js';
import { describeIdentity, type ObjectIdentity } from './identity.js';
import type { ReadUnit } from './read-plan.js';

/** Units read ahead of the consumer while streaming. */
const READ_AHEAD = 2;

/** How a streamed read gets its units, in order (from `SliceReader.unitReader`). */
export interface UnitReader {
  /** The unit's bytes, verified; undefined when they failed (and were repaired). */
  read(unit: ReadUnit): Promise<Buffer | undefined>;
  /** The slices before `keepFrom` are read (Infinity: the stream is over): what they hold goes. */
  doneBefore(keepFrom: number): void;
}

/**
 * The bytes of a streamed read, unit by unit: each unit is verified (by `reader`) before its
 * bytes go out, and READ_AHEAD units are read while the consumer takes the current one. The first
 * unit is already read (`firstBytes`: the read is a hit only once it verified). A later unit that
 * fails ends the stream with a `CHECKSUM_MISMATCH` KeelError whose `details.offset` says where to
 * continue from the origin. The reader is told as slices are done with, and when the stream ends.
 */
export async function* streamUnits(
  id: ObjectIdentity,
  units: ReadUnit[],
  firstBytes: Buffer,
  reader: UnitReader,
  counts: CacheCounts,
): AsyncGenerator<Buffer> {
  const ahead: Promise<Buffer | undefined>[] = [];
  let scheduled = 1;
  const fill = (): void => {
    while (ahead.length < READ_AHEAD && scheduled < units.length) {
      const p = reader.read(units[scheduled++] as ReadUnit);
      p.catch(() => undefined);
      ahead.push(p);
    }
  };
  try {
    fill();
    counts.bytesServed += firstBytes.length;
    yield firstBytes;
    for (let u = 1; u < units.length; u++) {
      const unit = units[u] as ReadUnit;
      const bytes = await (ahead.shift() as Promise<Buffer | undefined>);
      if (!bytes) {
        throw keelError(
          'CHECKSUM_MISMATCH',
          `slice ${unit.slice.index} of ${describeIdentity(id)} failed verification mid-read; continue from the origin at byte ${unit.offset}`,
          { offset: unit.offset },
        );
      }
      // Units are in order: slices before the next unit's are done with.
      const following = units[u + 1];
      if (following) reader.doneBefore(following.slice.index);
      fill();
      counts.bytesServed += bytes.length;
      yield bytes;
    }
  } finally {
    reader.doneBefore(Infinity);
  }
}
