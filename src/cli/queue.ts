import type { Command } from 'commander';
import { keelError } from '../errors/index.js';
import { openQueue, type Queue } from '../queue/index.js';

interface StoreOptions {
  store: string;
  queue: string;
}

async function withQueue(options: StoreOptions, fn: (q: Queue) => void): Promise<void> {
  if (/^postgres(ql)?:\/\//.test(options.store)) {
    throw keelError('INVALID_CONFIG', `keel queue supports only SQLite stores for now; got ${options.store}`);
  }
  const q = openQueue(options.store.replace(/^sqlite:/, ''), { name: options.queue });
  try {
    fn(q);
  } finally {
    await q.close(0);
  }
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Registers `keel queue stats|dead|redrive|purge --store PATH [--queue NAME]`. */
export function registerQueueCommand(program: Command): void {
  const queue = program.command('queue').description('inspect and repair a persistent keel queue');
  const common = (c: Command): Command =>
    c
      .requiredOption('--store <path>', 'SQLite file of the queue')
      .option('--queue <name>', 'queue name', 'default');
  common(queue.command('stats').description('depth, oldest age, dead letters')).action((o: StoreOptions) =>
    withQueue(o, (q) => {
      print(q.stats());
    }),
  );
  common(queue.command('dead').description('list dead letters with their error history')).action(
    (o: StoreOptions) =>
      withQueue(o, (q) => {
        print(q.deadLetters(1000));
      }),
  );
  common(queue.command('redrive').description('send dead letters back to the queue')).action(
    (o: StoreOptions) =>
      withQueue(o, (q) => {
        print({ redriven: q.redrive() });
      }),
  );
  common(
    queue
      .command('purge')
      .description('delete completed items older than a day, dead letters older than 7 days'),
  ).action((o: StoreOptions) =>
    withQueue(o, (q) => {
      print({ purged: q.purge() });
    }),
  );
}
