import type { Coordinator, Lease } from './coordinator.js';

const LEADER: Lease = { role: 'leader', done: () => undefined };

/**
 * One process alone: it leads every lease (its own single flight already joins concurrent
 * requests), and there is nobody to tell about invalidations, breakers or budgets.
 */
export class LocalCoordinator implements Coordinator {
  readonly kind = 'local';

  lease(): Promise<Lease> {
    return Promise.resolve(LEADER);
  }

  invalidate(): Promise<void> {
    return Promise.resolve();
  }

  onInvalidate(): () => void {
    return () => undefined;
  }

  publishBreaker(): void {
    // Nobody else to tell.
  }

  onBreaker(): () => void {
    return () => undefined;
  }

  publishBudget(): void {
    // Nobody else to tell.
  }

  onBudget(): () => void {
    return () => undefined;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
