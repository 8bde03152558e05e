/**
 * keel: error handling and recovery for TypeScript services.
 *
 * The main entry holds the error model, the clock and the policies. The durable and operational
 * parts have their own entries: `keel/queue`, `keel/groups`, `keel/cache`, `keel/transfer`,
 * `keel/ops`, `keel/chaos` and `keel/gateway`.
 * @packageDocumentation
 */
export * from './errors/index.js';
export * from './time/index.js';
export * from './policy/index.js';
