import type { Policy } from 'keel';

/**
 * The policy a transfer runs its requests under: any keel policy or pipeline (a retry, a retry with
 * a circuit breaker, a retry budget, a timeout…) that substitutes no value for a failure. A
 * fallback is refused by the type: a substitute value is not a response to transfer bytes from.
 */
export type TransferPolicy = Policy;
