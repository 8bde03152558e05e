import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { ChaosControlServer } from '../chaos/index.js';
import { classify, keelError } from '../errors/index.js';

/** Options of `keel chaos`. */
interface ChaosCommandOptions {
  listen: string;
  config?: string;
}

/**
 * `keel chaos`: runs the Toxiproxy-compatible control API (and the proxies it creates) until
 * SIGINT/SIGTERM. `--config` populates proxies from a Toxiproxy JSON file.
 */
export function registerChaosCommand(program: Command): void {
  program
    .command('chaos')
    .description('run a fault-injection proxy server with a Toxiproxy-compatible HTTP API')
    .option('--listen <host:port>', 'address of the control API', '127.0.0.1:8474')
    .option('--config <file>', 'JSON file with an array of proxies to create at start (Toxiproxy format)')
    .action(async (options: ChaosCommandOptions) => {
      let proxies: unknown;
      if (options.config !== undefined) {
        try {
          proxies = JSON.parse(await readFile(options.config, 'utf8')) as unknown;
        } catch (err) {
          throw keelError('INVALID_CONFIG', `--config ${options.config}: ${classify(err).message}`);
        }
        if (!Array.isArray(proxies))
          throw keelError('INVALID_CONFIG', `--config ${options.config}: expected a JSON array of proxies`);
      }
      const api = await ChaosControlServer.start({ listen: options.listen });
      for (const p of (proxies as unknown[] | undefined) ?? []) {
        try {
          await api.createProxy(p);
        } catch (err) {
          await api.close();
          const message = (err as { message?: unknown }).message;
          throw keelError(
            'INVALID_CONFIG',
            `--config ${options.config ?? ''}: ${typeof message === 'string' ? message : 'invalid proxy'}`,
          );
        }
      }
      process.stdout.write(
        `keel chaos: control API on ${api.url} (Toxiproxy-compatible); ${api.proxies.size} proxies\n`,
      );
      for (const p of api.proxies.values())
        process.stdout.write(`  ${p.name}: ${p.listen} -> ${p.upstream}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      await api.close();
    });
}
