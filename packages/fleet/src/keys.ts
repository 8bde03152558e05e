/** The Redis keys and channels of one fleet, all under its prefix (default `keel`). */
export interface FleetKeys {
  lease(key: string): string;
  /** How the last holder of a lease ended it (`1` done, `0` failed), kept one lease TTL. */
  leaseOutcome(key: string): string;
  instance(id: string): string;
  /** Sorted set of instance ids that sent a heartbeat (pruned of those whose heartbeat expired). */
  readonly instances: string;
  /** Hash of breaker name → last state published (not closed ones). */
  readonly breakers: string;
  /** Channel: a lease's holder is done with it. */
  readonly settled: string;
  /** Channel: an object changed. */
  readonly invalidate: string;
  /** Channel of one instance's acknowledgements. */
  ack(id: string): string;
  /** Channel: a breaker's state changed. */
  readonly breaker: string;
  /** Channel: an instance's change to a retry budget. */
  readonly budget: string;
}

/** Longest prefix accepted. */
export const MAX_PREFIX_LENGTH = 64;

/** The keys of the fleet under `prefix`. @throws Error when the prefix is empty, too long or holds spaces. */
export function fleetKeys(prefix = 'keel'): FleetKeys {
  if (!/^[A-Za-z0-9_.:{}-]{1,64}$/.test(prefix))
    throw new Error(
      `fleet key prefix: expected 1 to ${MAX_PREFIX_LENGTH} letters, digits or _.:{}-, got ${JSON.stringify(prefix.slice(0, 80))}`,
    );
  const p = `${prefix}:fleet`;
  return {
    lease: (key) => `${p}:lease:${key}`,
    leaseOutcome: (key) => `${p}:lease-outcome:${key}`,
    instance: (id) => `${p}:instance:${id}`,
    instances: `${p}:instances`,
    breakers: `${p}:breakers`,
    settled: `${p}:settled`,
    invalidate: `${p}:invalidate`,
    ack: (id) => `${p}:ack:${id}`,
    breaker: `${p}:breaker`,
    budget: `${p}:budget`,
  };
}
