import { EVICTOR_LOCK as EVICTOR, type CacheLocks } from 'keel/cache';
import type { Coordinator } from './coordinator.js';

/**
 * The cache's locks with its evictor elected through `coord`: `tryRun('evictor')` runs only in
 * the process that holds the lease on `cache:evictor` (the others skip eviction, as they do when
 * the lock file is taken), so the processes `coord` joins — the workers of one host, or hosts
 * sharing one volume through Redis — evict one at a time. The evictor still takes `files`' own
 * lock under the lease, for processes that share the directory without sharing `coord`; every
 * other lock (an object's metadata) is `files`' alone.
 */
export function coordinatedLocks(files: CacheLocks, coord: Coordinator): CacheLocks {
  return {
    run: (key, fn) => files.run(key, fn),
    async tryRun(key, fn) {
      if (key !== EVICTOR) return files.tryRun(key, fn);
      const lease = await coord.lease(`cache:${EVICTOR}`);
      if (lease.role === 'follower') return { ran: false };
      let ok = false;
      try {
        const run = await files.tryRun(key, fn);
        ok = run.ran;
        return run;
      } finally {
        lease.done(ok);
      }
    },
  };
}
