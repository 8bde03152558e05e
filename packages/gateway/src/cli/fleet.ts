import type { Command } from 'commander';
import { keelError } from 'keel';
import { parseRedisUrl, readFleetStatus, type InstanceStatus } from '@keel/fleet';

interface FleetStatusFlags {
  coordinator?: string;
  coordinatorPrefix?: string;
  json?: boolean;
}

/** The instances as a table: one line each, the columns an operator scans first. */
export function fleetTable(instances: readonly InstanceStatus[], now = Date.now()): string {
  if (instances.length === 0) return 'no live instances (no heartbeat within the last 3 s)\n';
  const rows = instances.map((i) => [
    i.id,
    `${i.host}:${i.port}`,
    String(i.pid),
    i.health,
    `${(i.hitRatio * 100).toFixed(1)} %`,
    String(i.fillsInFlight),
    Object.entries(i.breakers)
      .map(([name, state]) => `${name}=${state}`)
      .join(',') || '-',
    `${Math.max(0, Math.round((now - Date.parse(i.started)) / 1000))} s`,
  ]);
  const header = ['ID', 'ADDRESS', 'PID', 'HEALTH', 'HIT RATIO', 'FILLS', 'BREAKERS NOT CLOSED', 'UP'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, c) => cell.padEnd(widths[c] ?? 0))
      .join('  ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

/** Registers `keel fleet status --coordinator redis://… [--coordinator-prefix P] [--json]`. */
export function registerFleetCommand(program: Command): void {
  const fleet = program
    .command('fleet')
    .description('gateways on several hosts coordinated through Redis (see docs/fleet.md)');
  fleet
    .command('status')
    .description(
      'the live gateway instances (heartbeat within 3 s): address, health, hit ratio, fills in flight, open breakers',
    )
    .option('--coordinator <url>', "the fleet's Redis, redis://… (KEEL_COORDINATOR)")
    .option(
      '--coordinator-prefix <prefix>',
      "prefix of the fleet's keys (KEEL_COORDINATOR_PREFIX, default keel)",
    )
    .option('--json', 'print the instances as JSON')
    .action(async (flags: FleetStatusFlags) => {
      const url = flags.coordinator ?? process.env.KEEL_COORDINATOR;
      if (url === undefined)
        throw keelError(
          'INVALID_INPUT',
          '--coordinator (KEEL_COORDINATOR): required, the redis://… URL of the fleet',
        );
      parseRedisUrl(url, '--coordinator (KEEL_COORDINATOR)');
      const prefix = flags.coordinatorPrefix ?? process.env.KEEL_COORDINATOR_PREFIX ?? 'keel';
      const instances = await readFleetStatus(url, prefix);
      process.stdout.write(flags.json ? `${JSON.stringify(instances, null, 2)}\n` : fleetTable(instances));
    });
}
