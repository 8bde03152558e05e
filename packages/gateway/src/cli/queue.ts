import type { Command } from 'commander';
import { keelError } from 'keel';
import { openQueue, type Queue, type QueueItemState, type StoreAccess } from '@keel/queue';

interface StoreOptions {
  store: string;
  queue: string;
  schema?: string;
}

const STATES: readonly QueueItemState[] = ['pending', 'active', 'completed', 'dead'];

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1)
    throw keelError('INVALID_INPUT', `${name} must be a whole number >= 1, got "${raw}"`);
  return n;
}

/** Parses a CLI duration (`30m`, `12h`, `7d`, `500ms`, plain ms); INVALID_INPUT naming the flag otherwise. */
export function duration(name: string, raw: string | undefined, fallbackMs: number): number {
  if (raw === undefined) return fallbackMs;
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(raw.trim());
  if (!m) throw keelError('INVALID_INPUT', `${name} must be a duration such as 30m, 12h or 7d, got "${raw}"`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 'ms'] ?? 1;
  return Number(m[1]) * unit;
}

/**
 * Opens the queue a command works on. The CLI only inspects and repairs: it never creates a store
 * or adds tables to a file that is not one (`access`), and runs no automatic retention sweep.
 */
async function withQueue(
  options: StoreOptions,
  access: Exclude<StoreAccess, 'create'>,
  fn: (q: Queue) => Promise<unknown>,
): Promise<void> {
  const q = await openQueue(options.store, {
    name: options.queue,
    retention: false,
    access,
    // A person at a terminal wants the error now, not after waiting for the server.
    startup: false,
    ...(options.schema === undefined ? {} : { schema: options.schema }),
  });
  try {
    print(await fn(q));
  } finally {
    await q.close(0);
  }
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Registers `keel queue stats|list|dead|redrive|purge --store PATH-OR-URL [--queue NAME]`. */
export function registerQueueCommand(program: Command): void {
  const queue = program.command('queue').description('inspect and repair a persistent keel queue');
  const common = (c: Command): Command =>
    c
      .requiredOption(
        '--store <path-or-url>',
        'SQLite file (or sqlite:<path>) or postgres://user@host:port/db of the queue',
      )
      .option('--queue <name>', 'queue name', 'default')
      .option('--schema <name>', 'PostgreSQL schema of the queue tables (default: search_path)');
  common(queue.command('stats').description('depth, oldest age, dead letters')).action((o: StoreOptions) =>
    withQueue(o, 'read-only', (q) => q.stats()),
  );
  common(queue.command('list').description('list items in one state, oldest first'))
    .option('--state <state>', `one of ${STATES.join(', ')}`, 'pending')
    .option('--limit <n>', 'at most this many items', '100')
    .action((o: StoreOptions & { state: string; limit: string }) => {
      if (!STATES.includes(o.state as QueueItemState))
        throw keelError('INVALID_INPUT', `--state must be one of ${STATES.join(', ')}, got "${o.state}"`);
      const limit = positiveInt('--limit', o.limit, 100);
      return withQueue(o, 'read-only', (q) => q.list(o.state as QueueItemState, limit));
    });
  common(queue.command('dead').description('list dead letters with their error history'))
    .option('--limit <n>', 'at most this many items', '1000')
    .action((o: StoreOptions & { limit: string }) => {
      const limit = positiveInt('--limit', o.limit, 1000);
      return withQueue(o, 'read-only', (q) => q.deadLetters(limit));
    });
  common(queue.command('redrive').description('send dead letters (all, or --id) back to the queue'))
    .option('--id <ids...>', 'only these dead letters')
    .action((o: StoreOptions & { id?: string[] }) => {
      const ids = o.id?.map((raw) => positiveInt('--id', raw, 0));
      return withQueue(o, 'existing', async (q) => ({ redriven: await q.redrive(ids) }));
    });
  common(queue.command('purge').description('delete completed items and dead letters older than an age'))
    .option('--completed-older-than <duration>', 'completed items older than this (default 1d)')
    .option('--dead-older-than <duration>', 'dead letters older than this (default 14d)')
    .action((o: StoreOptions & { completedOlderThan?: string; deadOlderThan?: string }) => {
      const completed = duration('--completed-older-than', o.completedOlderThan, 86_400_000);
      const dead = duration('--dead-older-than', o.deadOlderThan, 14 * 86_400_000);
      return withQueue(o, 'existing', async (q) => ({ purged: await q.purge(completed, dead) }));
    });
}
