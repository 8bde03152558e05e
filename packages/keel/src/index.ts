/**
 * keel: error handling and recovery for TypeScript services.
 *
 * The main entry holds the error model, the clock and the policies; `keel/cache` (the range cache)
 * and `keel/chaos` (fault injection) are entries of this package too, all without runtime
 * dependencies. The parts that need other packages are packages of their own: `@keel/ops`,
 * `@keel/queue`, `@keel/groups`, `@keel/transfer` and `@keel/gateway` (with the `keel` command).
 * @packageDocumentation
 */
export * from './errors/index.js';
export * from './time/index.js';
export * from './policy/index.js';
