/**
 * Time for keel: the {@link Clock} abstraction, the real {@link systemClock}, a deterministic
 * {@link VirtualClock} for tests and the shared {@link DeadlineScheduler} behind cheap timeouts.
 * @packageDocumentation
 */
export { systemClock, sleepWith, type Clock, type TimerHandle } from './clock.js';
export { VirtualClock } from './virtual-clock.js';
export { DeadlineScheduler, deadlineScheduler } from './deadline-scheduler.js';
