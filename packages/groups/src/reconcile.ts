import type { OperationSpec } from './types.js';

/** One difference between what is and what should be. */
export type Difference<T> =
  | { key: string; kind: 'missing'; desired: T }
  | { key: string; kind: 'extra'; actual: T }
  | { key: string; kind: 'changed'; actual: T; desired: T };

/** Options of {@link reconcile}. */
export interface ReconcileOptions<T> {
  /** Reads what is there now, by key. */
  actual: () => Promise<ReadonlyMap<string, T>> | ReadonlyMap<string, T>;
  /** States what should be there, by key. */
  desired: () => Promise<ReadonlyMap<string, T>> | ReadonlyMap<string, T>;
  /** Whether two values agree (default: equal JSON). */
  equals?: (a: T, b: T) => boolean;
  /** The operations that close each kind of difference (each may return one or several). */
  create: (key: string, desired: T) => OperationSpec | OperationSpec[];
  update?: (key: string, actual: T, desired: T) => OperationSpec | OperationSpec[];
  /** Omit to leave extra entries alone. */
  remove?: (key: string, actual: T) => OperationSpec | OperationSpec[];
}

/** What {@link diff} compares. */
export type DiffOptions<T> = Pick<ReconcileOptions<T>, 'actual' | 'desired' | 'equals'>;

/** The differences between desired and actual state, sorted by key (what the health check counts as drift). */
export async function diff<T>(options: DiffOptions<T>): Promise<Difference<T>[]> {
  const equals = options.equals ?? ((a: T, b: T) => JSON.stringify(a) === JSON.stringify(b));
  const [actual, desired] = await Promise.all([options.actual(), options.desired()]);
  const keys = [...new Set([...actual.keys(), ...desired.keys()])].sort();
  const differences: Difference<T>[] = [];
  for (const key of keys) {
    const has = actual.has(key);
    const wants = desired.has(key);
    const a = actual.get(key) as T;
    const d = desired.get(key) as T;
    if (wants && !has) differences.push({ key, kind: 'missing', desired: d });
    else if (has && !wants) differences.push({ key, kind: 'extra', actual: a });
    else if (has && wants && !equals(a, d)) differences.push({ key, kind: 'changed', actual: a, desired: d });
  }
  return differences;
}

/**
 * Compares desired and actual state, lists the differences (sorted by key) and builds the steps
 * of a group that closes them: each difference's operations form one sequential run, appended in order.
 * Running it again after a partial completion yields only what is still missing.
 */
export async function reconcile<T>(
  options: ReconcileOptions<T>,
): Promise<{ differences: Difference<T>[]; steps: OperationSpec[] }> {
  const differences = await diff(options);
  const steps: OperationSpec[] = [];
  const add = (ops: OperationSpec | OperationSpec[]): void => {
    steps.push(...(Array.isArray(ops) ? ops : [ops]));
  };
  for (const d of differences) {
    if (d.kind === 'missing') add(options.create(d.key, d.desired));
    else if (d.kind === 'extra') {
      if (options.remove) add(options.remove(d.key, d.actual));
    } else if (options.update) add(options.update(d.key, d.actual, d.desired));
  }
  return { differences, steps };
}
