import { Command, CommanderError } from 'commander';
import { registerCacheCommand } from './cache.js';
import { registerChaosCommand } from './chaos.js';
import { registerTransferCommands } from './transfer.js';
import { registerGatewayCommand } from './gateway.js';
import { registerGroupsCommand } from './groups.js';
import { registerQueueCommand } from './queue.js';
import { registerFleetCommand } from './fleet.js';
import { keelVersion } from './version.js';

/** Builds the `keel` command line with every subcommand registered. */
export function buildProgram(): Command {
  const program = new Command('keel')
    .description(
      'keel: error handling and recovery for TypeScript services, and a self-healing S3 caching gateway.',
    )
    .version(keelVersion(), '-v, --version', 'print the version')
    .showHelpAfterError('(run keel --help for usage)')
    .showSuggestionAfterError(true);
  // Subcommands register here, one line each.
  registerChaosCommand(program);
  registerCacheCommand(program);
  registerTransferCommands(program);
  registerGatewayCommand(program);
  registerGroupsCommand(program);
  registerQueueCommand(program);
  registerFleetCommand(program);
  return program;
}

/** Runs the CLI with `argv` (node's full argv) and returns the exit code instead of exiting. */
export async function runCli(argv: readonly string[]): Promise<number> {
  const program = buildProgram().exitOverride();
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    throw err;
  }
}
