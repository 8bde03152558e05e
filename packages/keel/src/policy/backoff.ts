import { keelError } from '../errors/index.js';

/** One step of a backoff: the delay to wait now and the backoff to use after it. */
export interface BackoffStep {
  delayMs: number;
  next: Backoff;
}

/**
 * An immutable sequence of delays: `next()` returns the delay and the backoff for the step after,
 * so one backoff value can be shared by any number of concurrent retries.
 */
export interface Backoff {
  next(): BackoffStep;
}

/**
 * How randomness is added to an exponential backoff:
 * - `'none'`: exactly initialMs · multiplierⁿ (capped at maxMs);
 * - `'full'`: uniformly in [0, d] (AWS "full jitter");
 * - `'equal'`: d/2 + uniformly in [0, d/2];
 * - `'decorrelated'`: uniformly in [initialMs, 3 · previous], capped (AWS "decorrelated jitter");
 * - a number f in (0, 1]: d · (1 ± f), e.g. 0.2 for ±20 %.
 */
export type Jitter = 'none' | 'full' | 'equal' | 'decorrelated' | number;

/** A source of uniform random numbers in [0, 1); inject one for deterministic tests. */
export type RandomSource = () => number;

function checkDelay(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw keelError('INVALID_CONFIG', `backoff: ${name} must be a finite number >= 0, got ${String(value)}`);
  }
  return value;
}

class ConstantBackoff implements Backoff {
  private readonly step: BackoffStep;
  constructor(delayMs: number) {
    this.step = { delayMs, next: this };
  }
  next(): BackoffStep {
    return this.step;
  }
}

/** The same delay every time. */
export function constant(delayMs: number): Backoff {
  return new ConstantBackoff(checkDelay('delayMs', delayMs));
}

/** Options of {@link linear}. */
export interface LinearBackoffOptions {
  /** First delay (default 100 ms). */
  initialMs?: number;
  /** Added after each step (default: initialMs). */
  stepMs?: number;
  /** Upper bound (default 10 s). */
  maxMs?: number;
}

class LinearBackoff implements Backoff {
  constructor(
    private readonly delayMs: number,
    private readonly stepMs: number,
    private readonly maxMs: number,
  ) {}
  next(): BackoffStep {
    const delayMs = Math.min(this.delayMs, this.maxMs);
    return { delayMs, next: new LinearBackoff(delayMs + this.stepMs, this.stepMs, this.maxMs) };
  }
}

/** initialMs, initialMs + stepMs, initialMs + 2·stepMs, … capped at maxMs. */
export function linear(options: LinearBackoffOptions = {}): Backoff {
  const initialMs = checkDelay('initialMs', options.initialMs ?? 100);
  const stepMs = checkDelay('stepMs', options.stepMs ?? initialMs);
  const maxMs = checkDelay('maxMs', options.maxMs ?? 10_000);
  return new LinearBackoff(initialMs, stepMs, maxMs);
}

/** Options of {@link exponential}. */
export interface ExponentialBackoffOptions {
  /** First (un-jittered) delay (default 100 ms). */
  initialMs?: number;
  /** Upper bound of any delay (default 10 s). */
  maxMs?: number;
  /** Growth factor per step (default 2). */
  multiplier?: number;
  /** Randomness (default `'full'`): see {@link Jitter}. */
  jitter?: Jitter;
  /** Random source (default Math.random). */
  random?: RandomSource;
}

interface ExponentialConfig {
  initialMs: number;
  maxMs: number;
  multiplier: number;
  jitter: Jitter;
  random: RandomSource;
}

class ExponentialBackoff implements Backoff {
  constructor(
    private readonly config: ExponentialConfig,
    private readonly step: number,
    private readonly previousMs: number,
  ) {}

  next(): BackoffStep {
    const { initialMs, maxMs, multiplier, jitter, random } = this.config;
    const base = Math.min(maxMs, initialMs * multiplier ** this.step);
    let delayMs: number;
    if (jitter === 'none') delayMs = base;
    else if (jitter === 'full') delayMs = random() * base;
    else if (jitter === 'equal') delayMs = base / 2 + (random() * base) / 2;
    else if (jitter === 'decorrelated') {
      const upper = Math.max(initialMs, this.previousMs * 3);
      delayMs = Math.min(maxMs, initialMs + random() * (upper - initialMs));
    } else delayMs = Math.min(maxMs, Math.max(0, base * (1 + jitter * (2 * random() - 1))));
    delayMs = Math.round(delayMs);
    // Past the cap the step count no longer matters; stop growing it so multiplier ** step stays finite.
    const nextStep = base >= maxMs ? this.step : this.step + 1;
    return { delayMs, next: new ExponentialBackoff(this.config, nextStep, delayMs) };
  }
}

/** initialMs · multiplierⁿ capped at maxMs, with jitter (full by default). */
export function exponential(options: ExponentialBackoffOptions = {}): Backoff {
  const initialMs = checkDelay('initialMs', options.initialMs ?? 100);
  const maxMs = checkDelay('maxMs', options.maxMs ?? 10_000);
  const multiplier = options.multiplier ?? 2;
  if (!Number.isFinite(multiplier) || multiplier < 1) {
    throw keelError('INVALID_CONFIG', `backoff: multiplier must be >= 1, got ${String(multiplier)}`);
  }
  const jitter = options.jitter ?? 'full';
  if (typeof jitter === 'number' && !(jitter > 0 && jitter <= 1)) {
    throw keelError('INVALID_CONFIG', `backoff: a numeric jitter must be in (0, 1], got ${String(jitter)}`);
  }
  const config: ExponentialConfig = {
    initialMs,
    maxMs,
    multiplier,
    jitter,
    random: options.random ?? Math.random,
  };
  return new ExponentialBackoff(config, 0, initialMs);
}

/** The first `count` delays of a backoff (for inspection and tests). */
export function delays(backoff: Backoff, count: number): number[] {
  const out: number[] = [];
  let b = backoff;
  for (let i = 0; i < count; i++) {
    const step = b.next();
    out.push(step.delayMs);
    b = step.next;
  }
  return out;
}
