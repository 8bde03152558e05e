import type { AlertManager } from './alerts/manager.js';
import type { HealthRegistry } from './health.js';

/** How a component is running. */
export type DegradationMode = 'normal' | 'degraded' | 'read-only' | 'bypass';

/** A component's mode and why. */
export interface ComponentMode {
  mode: DegradationMode;
  reason?: string;
  /** Epoch ms of the last change. */
  since: number;
}

/**
 * Components report their mode here (the cache in `bypass` after a full disk, a queue spooling
 * locally during an outage). Any non-normal mode makes health answer `warn` (via the
 * `degradation:mode` check it registers), appears in status, and raises an alert that is resolved
 * when the component is back to normal.
 */
export class DegradationRegistry {
  private readonly modes = new Map<string, ComponentMode>();

  constructor(
    private readonly deps: { health?: HealthRegistry; alerts?: AlertManager; now?: () => number } = {},
  ) {
    deps.health?.register({
      name: 'degradation:mode',
      componentType: 'component',
      probes: ['readiness'],
      run: () => {
        const degraded = [...this.modes].filter(([, m]) => m.mode !== 'normal');
        if (degraded.length === 0) return { status: 'pass', observedValue: 'normal' };
        return {
          status: 'warn',
          observedValue: Object.fromEntries(degraded.map(([c, m]) => [c, m.mode])),
          output: degraded.map(([c, m]) => `${c} ${m.mode}${m.reason ? `: ${m.reason}` : ''}`).join('; '),
        };
      },
    });
  }

  /** Sets a component's mode; a change raises (or, back to normal, resolves) a `ComponentDegraded` alert. */
  set(component: string, mode: DegradationMode, reason?: string): void {
    const previous = this.modes.get(component);
    if (previous?.mode === mode && previous.reason === reason) return;
    const entry: ComponentMode = { mode, since: (this.deps.now ?? Date.now)() };
    if (reason !== undefined) entry.reason = reason;
    this.modes.set(component, entry);
    const alerts = this.deps.alerts;
    if (!alerts) return;
    if (mode === 'normal') {
      alerts.resolve('ComponentDegraded', { component });
      return;
    }
    if (previous && previous.mode !== 'normal') alerts.resolve('ComponentDegraded', { component });
    alerts.raise({
      name: 'ComponentDegraded',
      severity: mode === 'degraded' ? 'warning' : 'error',
      summary: `${component} is running in ${mode} mode${reason ? `: ${reason}` : ''}`,
      labels: { component },
      details: { mode },
    });
  }

  /** A component's mode (`normal` when it never reported). */
  get(component: string): ComponentMode {
    return this.modes.get(component) ?? { mode: 'normal', since: 0 };
  }

  /** Every component's mode, for `/status`. */
  snapshot(): Record<string, ComponentMode> {
    return Object.fromEntries(this.modes);
  }
}
