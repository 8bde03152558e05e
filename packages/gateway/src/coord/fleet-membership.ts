import { Gauge, type Registry } from 'prom-client';
import {
  RedisCoordinator,
  redactRedisUrl,
  type CoordinatorAvailability,
  type InstanceStatus,
} from '@keel/fleet';
import type { AlertManager, DashboardPanel, DashboardView, HealthRegistry } from '@keel/ops';
import type { Gateway } from '../gateway.js';
import type { Coordinator } from './coordinator.js';

/** The alert raised while the fleet's Redis cannot be used (the same name as in alerts.rules.yml). */
export const COORDINATOR_UNAVAILABLE_ALERT = 'KeelCoordinatorUnavailable';

/** This gateway's place in a fleet coordinated through Redis (`--coordinator redis://…`). */
export interface FleetMembership {
  /** What the gateway coordinates through: Redis, or `fallback` while Redis is unusable. */
  readonly coordinator: Coordinator;
  /** Reports the running gateway in the heartbeats (port, health, hit ratio, fills, breakers) and exports `keel_gateway_coordinator_up`. */
  bind(gateway: Gateway, health: HealthRegistry): void;
  /** The dashboard's "Fleet (Redis)" view: one row per live instance of the fleet, from the heartbeats. */
  view(): DashboardView;
  /** Leaves the fleet (its heartbeat is removed at once); `fallback` stays open. */
  close(): Promise<void>;
}

/** Options of {@link joinFleet}. */
export interface JoinFleetOptions {
  /** `redis://…`, already checked (its password is never logged). */
  url: string;
  /** Prefix of the fleet's keys and channels in Redis. */
  prefix: string;
  /** What coordinates while Redis is unusable: this process alone, or the workers of its host. */
  fallback: Coordinator;
  alerts: AlertManager;
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
}

/**
 * Joins the fleet coordinated through the Redis at `url`: starts a RedisCoordinator over
 * `fallback` and raises {@link COORDINATOR_UNAVAILABLE_ALERT} (resolved when Redis is back)
 * while Redis cannot be used. Resolves once the first connection was tried: a gateway starts and
 * serves whether or not Redis answers.
 */
export async function joinFleet(options: JoinFleetOptions): Promise<FleetMembership> {
  const shown = redactRedisUrl(options.url);
  let gateway: Gateway | undefined;
  let health: HealthRegistry | undefined;
  const breakers = new Map<string, { readonly state: string }>();
  const coordinator = new RedisCoordinator({
    url: options.url,
    prefix: options.prefix,
    fallback: options.fallback,
    log: options.log,
    status: () => (gateway ? heartbeatOf(gateway, health, breakers) : {}),
  });
  const labels = { component: 'coordinator' };
  const onAvailability = (a: CoordinatorAvailability): void => {
    if (a.available) options.alerts.resolve(COORDINATOR_UNAVAILABLE_ALERT, labels);
    else
      options.alerts.raise({
        name: COORDINATOR_UNAVAILABLE_ALERT,
        severity: 'warning',
        summary: `the fleet's Redis at ${shown} cannot be used (${a.reason}): this gateway coordinates fills, invalidations and breakers ${options.fallback.kind === 'cluster' ? 'with its own workers only' : 'alone'} until it returns`,
        labels,
      });
  };
  coordinator.onAvailability(onAvailability);
  const first = await coordinator.start();
  if (!first.available) onAvailability(first);
  let stopBreakers: (() => void) | undefined;
  return {
    coordinator,
    bind(g, h) {
      gateway = g;
      health = h;
      stopBreakers = g.onBreaker(
        (bucket, breaker) => breakers.set(bucket === '' ? '(origin)' : bucket, breaker),
        (bucket) => breakers.delete(bucket === '' ? '(origin)' : bucket),
      );
      registerCoordinatorGauge(g.metrics.registry, () => (coordinator.status.available ? 1 : 0));
    },
    view: () => ({
      id: 'fleet-instances',
      title: 'Fleet (Redis)',
      snapshot: async () => instancesPanels(await coordinator.instances(), coordinator.id),
    }),
    async close() {
      stopBreakers?.();
      await coordinator.close();
    },
  };
}

/**
 * The fleet's instances as the dashboard shows them: a table, this instance marked; `list`
 * undefined when they could not be listed (the table is then empty and says so, not "0 live").
 */
export function instancesPanels(list: readonly InstanceStatus[] | undefined, self: string): DashboardPanel[] {
  const level = (health: string): 'ok' | 'warn' | 'bad' =>
    health === 'pass' ? 'ok' : health === 'warn' ? 'warn' : 'bad';
  return [
    {
      kind: 'table',
      title: 'Instances',
      columns: [
        'Instance',
        'Host',
        'PID',
        'S3 port',
        'Health',
        'Hit ratio',
        'Fills in flight',
        'Breakers not closed',
        'Started',
        'Heartbeat',
      ],
      rows: (list ?? []).map((i) => ({
        key: i.id,
        cells: [
          i.id === self ? `${i.id} (this one)` : i.id,
          i.host,
          String(i.pid),
          i.port === 0 ? '—' : String(i.port),
          { value: i.health, level: level(i.health) },
          { value: i.hitRatio, unit: 'ratio' },
          { value: i.fillsInFlight, unit: 'count' },
          {
            value:
              Object.entries(i.breakers)
                .map(([name, state]) => `${name}: ${state}`)
                .join(', ') || '—',
            level: Object.keys(i.breakers).length > 0 ? 'bad' : undefined,
          },
          { value: Date.parse(i.started), unit: 'timestamp' },
          { value: Date.parse(i.at), unit: 'timestamp' },
        ],
      })),
      note: list
        ? `${list.length} live instance${list.length === 1 ? '' : 's'} (a heartbeat every second, kept 3 s)`
        : "the fleet's Redis cannot be used or failed to list the instances: no listing until it answers",
    },
  ];
}

/**
 * `keel_gateway_coordinator_up`: 1 while the coordination the gateway was started with is usable
 * (always, for one process or the workers of one host; with `--coordinator`, while Redis is).
 */
export function registerCoordinatorGauge(registry: Registry, up: () => number): void {
  if (registry.getSingleMetric('keel_gateway_coordinator_up')) return;
  new Gauge({
    name: 'keel_gateway_coordinator_up',
    help: 'Whether the coordination of this gateway with the others serving its cache is usable (with --coordinator: its Redis), 1 or 0.',
    registers: [registry],
    // A --workers primary shows the lowest of its workers': one of them cut off is what to see.
    aggregator: 'min',
    collect() {
      this.set(up());
    },
  });
}

async function heartbeatOf(
  gateway: Gateway,
  health: HealthRegistry | undefined,
  breakers: Map<string, { readonly state: string }>,
): Promise<Partial<InstanceStatus>> {
  const address = gateway.server.address();
  const reads = { hits: 0, all: 0 };
  for (const v of (await gateway.metrics.requests.get()).values) {
    const outcome = String(v.labels.outcome);
    if (!['HIT', 'MISS', 'PARTIAL', 'STALE'].includes(outcome)) continue;
    reads.all += v.value;
    if (outcome === 'HIT') reads.hits += v.value;
  }
  const statuses = Object.values(health?.latest() ?? {}).map((e) => e?.status);
  const open: Record<string, string> = {};
  for (const [name, b] of breakers) if (b.state !== 'closed') open[name] = b.state;
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    health: statuses.includes('fail') ? 'fail' : statuses.includes('warn') ? 'warn' : 'pass',
    hitRatio: reads.all > 0 ? reads.hits / reads.all : 0,
    fillsInFlight: gateway.fillsInFlight(),
    breakers: open,
  };
}
