import os from 'node:os';
import path from 'node:path';
import { classify } from '../errors/index.js';
import { startAdminServer, type AdminServer } from './admin-server.js';
import type { GatewayConfig } from './config.js';
import { createGateway, type Gateway, type GatewayOptions } from './gateway.js';

/** A gateway with its admin server, scheduled cleanup and SIGTERM handling. */
export interface RunningGateway {
  gateway: Gateway;
  admin: AdminServer;
  /** Drains (in-flight requests finish), then closes everything. */
  shutdown(): Promise<void>;
}

/**
 * Starts the gateway described by `config`: the S3 endpoint, the admin server, cleanup every
 * `cleanupIntervalSeconds`, and (with `handleSignals`) drain-and-exit on SIGTERM/SIGINT.
 */
export async function runGateway(
  config: GatewayConfig,
  extra: Partial<GatewayOptions> & { handleSignals?: boolean; afterShutdown?: () => Promise<void> } = {},
): Promise<RunningGateway> {
  const cacheDir = config.cacheDir ?? path.join(os.tmpdir(), 'keel-gateway-cache');
  const { handleSignals, afterShutdown, ...options } = extra;
  const gateway = await createGateway({
    upstream: config.upstream,
    originCredentials:
      config.originAccessKeyId && config.originSecretAccessKey
        ? { accessKeyId: config.originAccessKeyId, secretAccessKey: config.originSecretAccessKey }
        : undefined,
    region: config.region,
    auth: config.auth,
    clientKeys: config.clientKeys,
    cacheDir,
    cacheMaxBytes: config.cacheMaxBytes,
    sliceBytes: config.sliceBytes,
    ttlMs: config.ttlSeconds * 1000,
    baseDomain: config.baseDomain,
    ...options,
  });
  let draining = false;
  await gateway.listen(config.listenPort, config.listenHost);
  const admin = await startAdminServer(
    gateway,
    { port: config.adminPort, host: config.adminHost },
    () => !draining,
  );
  const cleanup = setInterval(() => {
    void gateway.cache?.cleanup().catch((err: unknown) => {
      process.stderr.write(`keel gateway: scheduled cleanup failed: ${classify(err).message}\n`);
    });
  }, config.cleanupIntervalSeconds * 1000);
  cleanup.unref();
  let done: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    done ??= (async () => {
      draining = true;
      clearInterval(cleanup);
      await gateway.close(config.drainSeconds * 1000);
      await admin.close();
      await afterShutdown?.();
    })();
    return done;
  };
  if (handleSignals) {
    const onSignal = (sig: string): void => {
      process.stderr.write(`keel gateway: ${sig}: draining ${gateway.inFlight()} request(s)\n`);
      shutdown().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  }
  return { gateway, admin, shutdown };
}
