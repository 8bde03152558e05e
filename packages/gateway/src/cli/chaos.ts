import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { ChaosControlServer, httpProxy, parseHttpFaultSpec, type HttpFaultRule } from 'keel/chaos';
import { classify, keelError } from 'keel';

/** Options of `keel chaos`. */
interface ChaosCommandOptions {
  listen: string;
  config?: string;
}

/** Options of `keel chaos http`. */
interface ChaosHttpCommandOptions {
  upstream: string;
  listen: string;
  fault: string[];
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/**
 * `keel chaos`: runs the Toxiproxy-compatible control API (and the proxies it creates) until
 * SIGINT/SIGTERM. `--config` populates proxies from a Toxiproxy JSON file.
 */
export function registerChaosCommand(program: Command): void {
  const chaos = program
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
      await untilSignal();
      await api.close();
    });

  chaos
    .command('http')
    .description('run an HTTP/1.1 fault proxy: injected statuses, delayed headers, cut or corrupted bodies')
    .requiredOption('--upstream <host:port>', 'the HTTP server to forward to')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8080')
    .option(
      '--fault <spec>',
      'a fault rule, repeatable: status=503[,retry-after=2] | delay=<ms> | cut=<bytes> | corrupt=<bytes>, ' +
        'with optional method=GET|HEAD, path=/prefix or path=~regexp, probability=0.2, name=<name>',
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .action(async (options: ChaosHttpCommandOptions) => {
      const rules: HttpFaultRule[] = options.fault.map((spec) => parseHttpFaultSpec(spec));
      const proxy = await httpProxy({ upstream: options.upstream, listen: options.listen, rules });
      process.stdout.write(
        `keel chaos http: ${proxy.url} -> ${options.upstream}; ${rules.length} fault rules\n`,
      );
      for (const spec of options.fault) process.stdout.write(`  ${spec}\n`);
      await untilSignal();
      await proxy.close();
    });
}
